import os

import numpy as np
import pytest

from labelgen.geometry import apply_homography, plane_homography, transfer


def test_frontal_plane_maps_the_photo_centre_to_the_principal_point():
    hom = plane_homography((400, 200), 0, 0, focal=300, principal=(160, 150), distance=1.5)
    centre = apply_homography(hom, np.array([[200.0, 100.0]]))
    assert centre[0] == pytest.approx([160, 150])
    # unit width at distance 1.5 spans focal / 1.5 = 200 px
    ends = apply_homography(hom, np.array([[0.0, 100], [400, 100]]))
    assert ends[1, 0] - ends[0, 0] == pytest.approx(200)


def test_rotation_foreshortens_and_transfer_round_trips():
    hom0 = plane_homography((300, 300), 0, 0, 384, (160, 160))
    hom60 = plane_homography((300, 300), 60, 0, 384, (160, 160))
    edge = np.array([[0.0, 150], [300, 150]])
    w0 = np.ptp(apply_homography(hom0, edge)[:, 0])
    w60 = np.ptp(apply_homography(hom60, edge)[:, 0])
    assert 0.4 < w60 / w0 < 0.6  # about cos(60 deg), with perspective
    pts = np.array([[100.0, 120], [200, 60]])
    assert transfer(hom60, hom0, transfer(hom0, hom60, pts)) == pytest.approx(pts)


def test_in_plane_roll_turns_the_photo_about_the_principal_point():
    hom = plane_homography((300, 300), 0, 0, 384, (160, 160), theta_deg=90)
    out = apply_homography(hom, np.array([[150.0, 150], [250, 150]]))
    assert out[0] == pytest.approx([160, 160])
    # 100 photo px = 1/3 of the unit plane, at distance 1.5: 384 / 1.5 / 3 = 85.3 view px, turned from +x to +y
    assert out[1] == pytest.approx([160, 160 + 384 / 1.5 / 3])


def test_a_rolled_demo_gives_full_pose_and_its_homographies_hold(tmp_path):
    """data.demo.roll draws an in-plane angle per view: the manifest gives theta (so pairing
    is geodesic) and each view's homography puts the photo where its mask is."""
    import pandas as pd
    from omegaconf import OmegaConf
    from PIL import Image

    from labelgen.demo import UNSEEN, build_demo, default_conf, load_photo
    from labelgen.pairing import default_conf as pairing_conf
    from labelgen.pairing import pose_mode

    assert not set(UNSEEN) & set(default_conf().photos)  # measured on, never tuned on
    manifest = build_demo(
        {
            "root": str(tmp_path),
            "photos": ["coins"],
            "azimuths": [-45, -15, 15, 45],
            "elevations": [0],
            "roll": 20.0,
            "size": 96,
            "focal": 115.0,
        }
    )
    df = pd.read_parquet(manifest)
    assert df["theta"].abs().between(0.1, 20).all()
    assert pose_mode(df, OmegaConf.create(pairing_conf)) == "geodesic"
    w, h = load_photo("coins").size
    for row in df.itertuples():
        hom = np.asarray(row.homography).reshape(3, 3)
        mask = np.asarray(Image.open(os.path.join(os.path.dirname(manifest), row.mask_uri))) > 0
        inside = (
            apply_homography(hom, np.array([[w / 2, h / 2], [w * 0.2, h * 0.2], [w * 0.8, h * 0.7]]))
            .round()
            .astype(int)
        )
        assert mask[inside[:, 1], inside[:, 0]].all()
