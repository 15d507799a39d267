"""Headless rendering with moderngl on EGL (Mesa's llvmpipe on a CPU, the driver's EGL on a GPU).

One pass writes three targets: the shaded, textured colour; per pixel the part id
and its canonical coordinate; and the camera depth. Cameras follow the OpenCV
convention (x right, y down, z forward): a view is `camera = R @ object + t`, then
the pinhole intrinsics.
"""

import numpy as np

from .shapes import PRIMITIVES, Part

VERTEX = """
#version 330
in vec3 in_pos; in vec3 in_normal; in vec2 in_uv;
uniform mat3 affine; uniform vec3 centre; uniform mat3 normal_mat;
uniform mat3 R; uniform vec3 t; uniform mat4 proj;
out vec3 v_canon; out vec3 v_normal; out vec2 v_uv; out float v_z;
void main() {
    vec3 cam = R * (affine * in_pos + centre) + t;
    gl_Position = proj * vec4(cam, 1.0);
    v_canon = in_pos; v_uv = in_uv; v_z = cam.z;
    v_normal = R * (normal_mat * in_normal);
}
"""
FRAGMENT = """
#version 330
uniform sampler2D tex; uniform float part_id; uniform vec3 light;
in vec3 v_canon; in vec3 v_normal; in vec2 v_uv; in float v_z;
layout(location = 0) out vec4 colour;
layout(location = 1) out vec4 info;
layout(location = 2) out vec4 depth;
void main() {
    float shade = 0.35 + 0.65 * abs(dot(normalize(v_normal), light));
    colour = vec4(texture(tex, v_uv).rgb * shade, 1.0);
    info = vec4(part_id, v_canon);
    depth = vec4(v_z, 0.0, 0.0, 0.0);
}
"""


class RendererUnavailable(RuntimeError):
    pass


def gl_projection(focal: float, principal: tuple[float, float], size: int, near: float = 0.05, far: float = 50.0):
    """The OpenGL clip matrix of pinhole intrinsics (y down, as image rows)."""
    cx, cy = principal
    return np.array(
        [
            [2 * focal / size, 0, 2 * cx / size - 1, 0],
            [0, -2 * focal / size, 1 - 2 * cy / size, 0],
            [0, 0, (far + near) / (far - near), -2 * far * near / (far - near)],
            [0, 0, 1, 0],
        ]
    )


def project(points: np.ndarray, R: np.ndarray, t: np.ndarray, focal: float, principal) -> np.ndarray:
    """(N, 3) object points -> (N, 3): pixel x, pixel y, camera depth."""
    cam = points @ R.T + t
    return np.stack(
        [focal * cam[:, 0] / cam[:, 2] + principal[0], focal * cam[:, 1] / cam[:, 2] + principal[1], cam[:, 2]], 1
    )


class Renderer:
    """One EGL context and its framebuffer; `render` draws an instance from one camera."""

    def __init__(self, size: int):
        try:
            import moderngl

            self.ctx = moderngl.create_standalone_context(backend="egl")
        except Exception as e:  # no EGL library or driver
            raise RendererUnavailable(
                f"no headless OpenGL ({type(e).__name__}: {e}); install Debian's libegl1 and libgl1-mesa-dri "
                "(the Makefile does when it runs as root)"
            ) from None
        self.size = size
        self.prog = self.ctx.program(vertex_shader=VERTEX, fragment_shader=FRAGMENT)
        targets = [
            self.ctx.texture((size, size), 4, dtype="f1"),
            self.ctx.texture((size, size), 4, dtype="f4"),
            self.ctx.texture((size, size), 4, dtype="f4"),
        ]
        self.fbo = self.ctx.framebuffer(targets, self.ctx.depth_renderbuffer((size, size)))
        self.vaos = {}
        for name, mesh in PRIMITIVES.items():
            data = np.concatenate([mesh.pos, mesh.normal, mesh.uv], 1).astype("f4")
            vbo, ibo = self.ctx.buffer(data.tobytes()), self.ctx.buffer(mesh.tri.astype("i4").tobytes())
            self.vaos[name] = self.ctx.vertex_array(self.prog, [(vbo, "3f 3f 2f", "in_pos", "in_normal", "in_uv")], ibo)

    def texture(self, image: np.ndarray):
        tex = self.ctx.texture(image.shape[1::-1], 3, np.ascontiguousarray(image, dtype=np.uint8).tobytes())
        tex.build_mipmaps()
        tex.repeat_x = tex.repeat_y = True
        return tex

    def render(self, parts: list[Part], part_ids: list[int], textures: list, R, t, focal, principal, light):
        """Colour (H, W, 3) uint8, part id (H, W) uint8 (0: background), canonical coordinate
        (H, W, 3) float32, camera depth (H, W) float32 (inf: background)."""
        import moderngl

        self.ctx.enable(moderngl.DEPTH_TEST)
        self.fbo.use()
        self.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        write = lambda name, m: self.prog[name].write(np.asarray(m, dtype="f4").T.tobytes())  # noqa: E731 (column-major)
        write("R", R)
        write("t", t)
        write("proj", gl_projection(focal, principal, self.size))
        write("light", light / np.linalg.norm(light))
        for p, pid in zip(parts, part_ids):
            write("affine", p.affine)
            write("centre", p.centre)
            write("normal_mat", np.linalg.inv(p.affine).T)
            self.prog["part_id"].value = float(pid)
            textures[p.texture].use(0)
            self.vaos[p.primitive].render()
        s = self.size
        read = lambda i, gl, np_type: np.frombuffer(self.fbo.read(components=4, attachment=i, dtype=gl), np_type)  # noqa: E731
        colour = read(0, "f1", np.uint8).reshape(s, s, 4)[::-1, :, :3]
        info = read(1, "f4", np.float32).reshape(s, s, 4)[::-1]
        z = read(2, "f4", np.float32).reshape(s, s, 4)[::-1, :, 0]
        part = np.rint(info[..., 0]).astype(np.uint8)
        return np.ascontiguousarray(colour), part, np.ascontiguousarray(info[..., 1:]), np.where(part > 0, z, np.inf)

    def release(self):
        self.ctx.release()
