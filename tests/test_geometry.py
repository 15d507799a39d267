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
