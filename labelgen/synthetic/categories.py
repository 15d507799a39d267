"""Object categories: parts with proportions drawn per instance, named keypoints.

Object frame: up is -y (image rows grow downwards), the front faces -z (the
camera at azimuth 0), the object's left is +x. Parts ending in `_l` are modelled;
their `_r` twins are the mirror images (shapes.Part.mirrored), so they look alike
and share canonical coordinates. A keypoint is a part and a unit-primitive point.
"""

import numpy as np

from .shapes import Part, part


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def _twins(parts: list[Part]) -> list[Part]:
    return parts + [p.mirrored(p.name[:-2] + "_r") for p in parts if p.name.endswith("_l")]


def quadruped(rng) -> list[Part]:
    length, height, leg = _u(rng, 0.7, 1.0), _u(rng, 0.3, 0.45), _u(rng, 0.35, 0.6)
    thick, head = _u(rng, 0.06, 0.11), _u(rng, 0.2, 0.3)
    top = -leg
    return _twins(
        [
            part("torso", "sphere", (height * 0.8, height, length), (0, top - height * 0.6, 0), texture=0),
            part("head", "sphere", (head * 0.8, head, head), (0, top - height * 1.4, -length * 0.95), texture=1),
            part(
                "snout",
                "cone",
                (head * 0.35, head * 0.6, head * 0.35),
                (0, top - height * 1.3, -length * 0.95 - head),
                rotation=(-90, 0, 0),
                texture=1,
            ),
            part(
                "tail",
                "cylinder",
                (thick * 0.5, length * 0.4, thick * 0.5),
                (0, top - height * 1.0, length * 1.2),
                rotation=(_u(rng, 40, 70), 0, 0),
                texture=0,
            ),
            part(
                "ear_l",
                "cone",
                (head * 0.25, head * 0.35, head * 0.15),
                (head * 0.5, top - height * 1.4 - head, -length * 0.9),
                rotation=(0, 0, 15),
                texture=2,
            ),
            part(
                "leg_front_l", "cylinder", (thick, leg / 2, thick), (height * 0.5, -leg / 2, -length * 0.65), texture=3
            ),
            part("leg_back_l", "cylinder", (thick, leg / 2, thick), (height * 0.5, -leg / 2, length * 0.65), texture=3),
        ]
    )


def bird(rng) -> list[Part]:
    body, leg, head = _u(rng, 0.35, 0.5), _u(rng, 0.25, 0.4), _u(rng, 0.14, 0.2)
    top = -leg
    return _twins(
        [
            part(
                "body",
                "sphere",
                (body * 0.6, body * 0.6, body),
                (0, top - body * 0.55, 0),
                rotation=(-15, 0, 0),
                texture=0,
            ),
            part("head", "sphere", (head, head, head), (0, top - body * 1.2, -body * 0.9), texture=1),
            part(
                "beak",
                "cone",
                (head * 0.3, head * 0.8, head * 0.3),
                (0, top - body * 1.15, -body * 0.9 - head * 1.5),
                rotation=(-90, 0, 0),
                texture=2,
            ),
            part(
                "tail",
                "box",
                (body * 0.3, 0.02, body * 0.5),
                (0, top - body * 0.7, body * 1.3),
                rotation=(-20, 0, 0),
                texture=0,
            ),
            part(
                "wing_l",
                "sphere",
                (0.04, body * 0.45, body * 0.8),
                (body * 0.62, top - body * 0.65, body * 0.1),
                rotation=(-10, 0, _u(rng, -25, 5)),
                texture=3,
            ),
            part("leg_l", "cylinder", (0.02, leg / 2, 0.02), (body * 0.25, -leg / 2, 0), texture=2),
            part("foot_l", "box", (0.05, 0.015, 0.09), (body * 0.25, -0.015, -0.05), texture=2),
        ]
    )


def chair(rng) -> list[Part]:
    w, d, leg, back = _u(rng, 0.4, 0.6), _u(rng, 0.4, 0.55), _u(rng, 0.4, 0.6), _u(rng, 0.45, 0.7)
    thick, seat = _u(rng, 0.025, 0.05), _u(rng, 0.03, 0.06)
    arm = rng.uniform() < 0.6
    parts = [
        part("seat", "box", (w / 2, seat, d / 2), (0, -leg - seat, 0), texture=0),
        part(
            "back",
            "box",
            (w / 2, back / 2, seat),
            (0, -leg - 2 * seat - back / 2, d / 2 - seat),
            rotation=(_u(rng, -15, 0), 0, 0),
            texture=1,
        ),
        part("leg_front_l", "cylinder", (thick, leg / 2, thick), (w / 2 - thick, -leg / 2, -d / 2 + thick), texture=2),
        part("leg_back_l", "cylinder", (thick, leg / 2, thick), (w / 2 - thick, -leg / 2, d / 2 - thick), texture=2),
    ]
    if arm:
        parts.append(
            part("armrest_l", "box", (0.03, 0.03, d * 0.4), (w / 2, -leg - 2 * seat - back * 0.35, 0), texture=3)
        )
    return _twins(parts)


def lamp(rng) -> list[Part]:
    """A twin-arm floor lamp: base, pole, two arms each with a shade."""
    pole, arm, shade = _u(rng, 0.7, 1.1), _u(rng, 0.2, 0.35), _u(rng, 0.1, 0.18)
    tilt = _u(rng, 30, 60)
    a = np.deg2rad(tilt)
    end = np.array([np.sin(a) * arm * 2, -pole - np.cos(a) * arm * 2, 0])
    return _twins(
        [
            part("base", "cylinder", (_u(rng, 0.15, 0.25), 0.03, _u(rng, 0.15, 0.25)), (0, -0.03, 0), texture=0),
            part("pole", "cylinder", (0.025, pole / 2, 0.025), (0, -pole / 2 - 0.06, 0), texture=1),
            part(
                "arm_l",
                "cylinder",
                (0.018, arm, 0.018),
                (np.sin(a) * arm, -pole - np.cos(a) * arm, 0),
                rotation=(0, 0, tilt),
                texture=1,
            ),
            part(
                "shade_l",
                "cone",
                (shade, shade, shade),
                tuple(end + [0, shade * 0.6, 0]),
                rotation=(0, 0, 0),
                texture=2,
            ),
        ]
    )


def amphora(rng) -> list[Part]:
    """A vessel with two handles: body, neck, lip, foot, handles left and right."""
    r, h, neck = _u(rng, 0.18, 0.3), _u(rng, 0.3, 0.45), _u(rng, 0.08, 0.14)
    return _twins(
        [
            part("foot", "cylinder", (r * 0.6, 0.03, r * 0.6), (0, -0.03, 0), texture=0),
            part("body", "sphere", (r, h, r), (0, -0.06 - h, 0), texture=1),
            part("neck", "cylinder", (neck, h * 0.35, neck), (0, -0.06 - 2 * h - h * 0.25, 0), texture=0),
            part("lip", "cylinder", (neck * 1.4, 0.02, neck * 1.4), (0, -0.06 - 2 * h - h * 0.6, 0), texture=2),
            part(
                "handle_l",
                "box",
                (0.02, h * 0.45, 0.03),
                (r * 0.95, -0.06 - h * 1.55, 0),
                rotation=(0, 0, -25),
                texture=3,
            ),
        ]
    )


def figure(rng) -> list[Part]:
    """A person-like figure."""
    leg, torso, shoulder = _u(rng, 0.4, 0.55), _u(rng, 0.3, 0.42), _u(rng, 0.14, 0.2)
    arm, head = _u(rng, 0.28, 0.38), _u(rng, 0.09, 0.12)
    swing = _u(rng, 5, 35)
    hip = -leg
    neck = hip - torso * 2
    return _twins(
        [
            part("torso", "box", (shoulder, torso, shoulder * 0.55), (0, hip - torso, 0), texture=0),
            part("head", "sphere", (head, head * 1.15, head), (0, neck - head * 1.2, 0), texture=1),
            part(
                "arm_l",
                "cylinder",
                (0.035, arm / 2, 0.035),
                (shoulder + 0.05, neck + arm / 2 + 0.02, 0),
                rotation=(0, 0, -swing),
                texture=2,
            ),
            part(
                "hand_l",
                "sphere",
                (0.045, 0.05, 0.045),
                (shoulder + 0.05 + np.sin(np.deg2rad(swing)) * arm / 2 + 0.02, neck + arm + 0.05, 0),
                texture=1,
            ),
            part("leg_l", "cylinder", (0.05, leg / 2, 0.05), (shoulder * 0.5, -leg / 2 - 0.03, 0), texture=3),
            part("foot_l", "box", (0.05, 0.03, 0.09), (shoulder * 0.5, -0.03, -0.04), texture=3),
        ]
    )


CATEGORIES = {"quadruped": quadruped, "bird": bird, "chair": chair, "lamp": lamp, "amphora": amphora, "figure": figure}

# keypoint -> (part, point on the unit primitive); `_l` keypoints have `_r` twins on the twin part
_TOP, _BOTTOM, _FRONT = (0, -1, 0), (0, 1, 0), (0, 0, -1)
KEYPOINTS = {
    "quadruped": {
        "nose": ("snout", _TOP),
        "head_top": ("head", _TOP),
        "tail_tip": ("tail", _BOTTOM),
        "ear_tip_l": ("ear_l", _TOP),
        "front_foot_l": ("leg_front_l", _BOTTOM),
        "back_foot_l": ("leg_back_l", _BOTTOM),
        "back_top": ("torso", _TOP),
    },
    "bird": {
        "beak_tip": ("beak", _TOP),
        "head_top": ("head", _TOP),
        "tail_end": ("tail", (0, 0, 1)),
        "wing_tip_l": ("wing_l", (0, 0, 1)),
        "foot_l": ("foot_l", _FRONT),
    },
    "chair": {
        "seat_front_l": ("seat", (1, -1, -1)),
        "back_top_l": ("back", (1, -1, -1)),
        "front_foot_l": ("leg_front_l", _BOTTOM),
        "back_foot_l": ("leg_back_l", _BOTTOM),
    },
    "lamp": {
        "base_front": ("base", (0, -1, -1)),
        "pole_top": ("pole", _TOP),
        "shade_rim_l": ("shade_l", (1, 1, 0)),
        "shade_top_l": ("shade_l", _TOP),
    },
    "amphora": {
        "lip_front": ("lip", (0, -1, -1)),
        "foot_front": ("foot", (0, 1, -1)),
        "handle_top_l": ("handle_l", _TOP),
        "handle_bottom_l": ("handle_l", _BOTTOM),
        "belly_l": ("body", (1, 0, 0)),
    },
    "figure": {
        "head_top": ("head", _TOP),
        "hand_l": ("hand_l", _BOTTOM),
        "foot_l": ("foot_l", (0, 1, -1)),
        "shoulder_l": ("torso", (1, -1, 0)),
        "hip_l": ("torso", (1, 1, 0)),
    },
}


def part_names(category: str) -> list[str]:
    """The category's parts in a fixed order: part id = index + 1 (0 is the background).
    Optional parts (a chair's armrests) are listed whether an instance has them or not."""
    names = [p.name for p in CATEGORIES[category](np.random.default_rng(0))]
    if category == "chair" and "armrest_l" not in names:
        names += ["armrest_l", "armrest_r"]
    return sorted(names)


def keypoints(category: str) -> dict[str, tuple[str, tuple]]:
    """All keypoints of a category, the `_r` twins included: on the twin part at the same
    canonical point, or, on a central part, at the mirrored point (x -> -x)."""
    out = {}
    for name, (p, point) in KEYPOINTS[category].items():
        out[name] = (p, point)
        if name.endswith("_l"):
            out[twin(name)] = (twin(p), point) if twin(p) else (p, (-point[0], *point[1:]))
    return out


def twin(name: str) -> str | None:
    """The left/right twin of a part or keypoint name, if it has one."""
    return name[:-2] + ("_r" if name.endswith("_l") else "_l") if name.endswith(("_l", "_r")) else None
