import numpy as np
import pytest

from swiftlib.data.geometry import StoreGeometry, crop_or_pad, lattice_offset, store_affine


def _aff(vs, origin):
    a = np.eye(4)
    a[:3, :3] *= vs
    a[:3, 3] = origin
    return a


def test_store_affine_is_on_the_lattice_and_centred():
    aff = store_affine((20, 24, 22), 8.0, centre_mm=(0.0, -17.0, 5.0))
    assert np.allclose(np.diag(aff)[:3], 8.0)
    assert np.allclose(aff[:3, 3] % 8.0, 0.0)  # world 0 is a voxel centre
    centre_world = aff[:3, :3] @ (np.array([20, 24, 22]) // 2) + aff[:3, 3]
    assert np.allclose(centre_world, [0.0, -16.0, 8.0])  # centre snapped to the 8 mm lattice


def test_lattice_offset_integer_and_unaligned():
    tgt = _aff(4.0, (-96, -112, -92))
    assert lattice_offset(_aff(4.0, (-96, -132, -72)), tgt) == (0, 5, -5)
    assert lattice_offset(_aff(4.0, (-95, -132, -72)), tgt) is None  # half-voxel shift
    assert lattice_offset(_aff(2.0, (-96, -132, -72)), tgt) is None  # other voxel size


def test_crop_or_pad_matches_explicit_indexing():
    rng = np.random.default_rng(0)
    src = rng.standard_normal((7, 9, 5, 3)).astype(np.float32)
    out = crop_or_pad(src, (2, -3, 1), (4, 8, 6), fill=-1.0)
    assert out.shape == (4, 8, 6, 3)
    for i in range(4):
        for j in range(8):
            for k in range(6):
                si, sj, sk = i + 2, j - 3, k + 1
                inside = 0 <= si < 7 and 0 <= sj < 9 and 0 <= sk < 5
                expect = src[si, sj, sk] if inside else np.full(3, -1.0)
                assert np.array_equal(out[i, j, k], expect)


def test_geometry_inverse_maps_voxel_back_to_source_coordinate():
    src_aff = _aff(4.0, (-96, -132, -72))
    geom = StoreGeometry.build((20, 24, 22), 4.0, store_affine((20, 24, 22), 4.0, (0, -17, 5)), (49, 58, 48), src_aff)
    assert geom.offset is not None
    store_ijk = np.array([[0, 0, 0], [3, 7, 11], [19, 23, 21]])
    src_ijk = geom.store_to_source(store_ijk)
    # same world coordinate through both affines
    w_store = geom.store_to_world(store_ijk)
    w_src = src_ijk @ src_aff[:3, :3].T + src_aff[:3, 3]
    assert np.allclose(w_store, w_src)
    assert np.allclose(geom.source_to_store(src_ijk), store_ijk)
    # a map on the store grid goes back exactly onto the source grid
    vol = np.zeros((20, 24, 22), np.float32)
    vol[3, 7, 11] = 5.0
    back = geom.to_source_array(vol)
    assert back.shape == (49, 58, 48)
    assert back[tuple(src_ijk[1].astype(int))] == 5.0 and back.sum() == 5.0
    assert StoreGeometry.from_dict(geom.to_dict()) == geom


def test_unaligned_geometry_uses_affines_and_refuses_exact_inverse():
    src_aff = _aff(3.0, (-91, -127, -73))
    geom = StoreGeometry.build((20, 24, 22), 4.0, store_affine((20, 24, 22), 4.0, (0, -17, 5)), (61, 73, 61), src_aff)
    assert geom.resampled
    ijk = np.array([[2.0, 5.0, 9.0]])
    assert np.allclose(geom.source_to_store(geom.store_to_source(ijk)), ijk)
    with pytest.raises(ValueError, match="resampled"):
        geom.to_source_array(np.zeros((20, 24, 22)))
    with pytest.raises(ValueError, match="space="):
        geom.to_nifti(np.zeros((20, 24, 22)), space="mni")
