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
    geom = StoreGeometry.build(
        (20, 24, 22), 4.0, store_affine((20, 24, 22), 4.0, (0, -17, 5)), (49, 58, 48), src_aff
    )
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
    geom = StoreGeometry.build(
        (20, 24, 22), 4.0, store_affine((20, 24, 22), 4.0, (0, -17, 5)), (61, 73, 61), src_aff
    )
    assert geom.resampled
    ijk = np.array([[2.0, 5.0, 9.0]])
    assert np.allclose(geom.source_to_store(geom.store_to_source(ijk)), ijk)
    with pytest.raises(ValueError, match="resampled"):
        geom.to_source_array(np.zeros((20, 24, 22)))
    with pytest.raises(ValueError, match="space="):
        geom.to_nifti(np.zeros((20, 24, 22)), space="mni")


def test_a_reoriented_source_goes_back_onto_the_file_grid_exactly():
    """A file in PIR voxel order (axes permuted and flipped) is reoriented to RAS for the
    store; maps go back onto the file's own grid, shape and affine, voxel for voxel."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    rng = np.random.default_rng(0)
    ras_aff = _aff(4.0, (-96, -132, -72))
    ras = rng.standard_normal((49, 58, 48)).astype(np.float32)
    pir = nib.Nifti1Image(ras, ras_aff).as_reoriented(
        ornt_transform(io_orientation(ras_aff), axcodes2ornt(tuple("PIR")))
    )
    file_data, file_aff = np.asarray(pir.dataobj), pir.affine
    assert "".join(nib.aff2axcodes(file_aff)) == "PIR" and file_data.shape == (58, 48, 49)
    back_to_ras = pir.as_reoriented(
        ornt_transform(io_orientation(file_aff), axcodes2ornt(tuple("RAS")))
    )
    grid = (20, 24, 22)
    geom = StoreGeometry.build(
        grid,
        4.0,
        store_affine(grid, 4.0, (0, -17, 5)),
        back_to_ras.shape,
        back_to_ras.affine,
        source_axcodes="PIR",
    )
    assert geom.axcodes == "RAS" and geom.source_axcodes == "PIR" and geom.offset is not None
    assert geom.file_shape == file_data.shape and np.allclose(geom.file_affine, file_aff)
    # what a store holds
    store_map = crop_or_pad(np.asarray(back_to_ras.dataobj), geom.offset, grid)
    img = geom.to_nifti(store_map, space="source")
    assert img.shape == file_data.shape and np.allclose(img.affine, file_aff)
    inside = geom.to_nifti(np.ones(grid, np.float32), space="source").get_fdata() > 0
    assert inside.sum() == np.prod(grid)
    # exact where the store saw it
    assert np.array_equal(np.asarray(img.dataobj)[inside], file_data[inside])
    assert StoreGeometry.from_dict(geom.to_dict()) == geom


def test_a_resampled_source_gets_its_map_resampled_with_nilearn():
    src_aff = _aff(3.0, (-91, -127, -73))
    grid = (20, 24, 22)
    geom = StoreGeometry.build(
        grid, 4.0, store_affine(grid, 4.0, (0, -17, 5)), (61, 73, 61), src_aff
    )
    # a ramp in x
    x = np.arange(grid[0], dtype=np.float32)[:, None, None] * np.ones(grid, np.float32)
    img = geom.to_nifti(x, space="source")
    assert img.shape == (61, 73, 61) and np.allclose(img.affine, src_aff)
    # a source voxel well inside the store box gets the ramp's value at its world position
    ijk = np.array([30, 36, 30])
    store_x = geom.source_to_store(ijk)[0, 0]
    assert np.asarray(img.dataobj)[tuple(ijk)] == pytest.approx(store_x, abs=1e-3)
    with pytest.raises(ValueError, match="interpolation='cubic'"):
        geom.to_nifti(x, space="source", interpolation="cubic")


@pytest.mark.parametrize("offset", [(2, -3, 1), (-2, 0, -4), (0, 0, 0), (8, 0, 0), (-5, 1, 2)])
def test_crop_or_pad_writes_every_voxel_once_and_casts_in_the_copy(offset):
    """The pad slabs plus the copied box cover the grid exactly (np.empty underneath: a missed
    voxel would hold garbage), and ``dtype`` casts in the same copy."""
    rng = np.random.default_rng(1)
    src = rng.integers(-300, 300, size=(7, 9, 5, 3)).astype(np.int16)
    grid = (4, 8, 6)
    expect = np.full(grid + (3,), 7.5, np.float32)  # the old np.full + slice reference
    for i in range(grid[0]):
        for j in range(grid[1]):
            for k in range(grid[2]):
                s = (i + offset[0], j + offset[1], k + offset[2])
                if all(0 <= v < n for v, n in zip(s, src.shape[:3])):
                    expect[i, j, k] = src[s]
    for _ in range(3):  # fresh np.empty each time: garbage would differ between calls
        out = crop_or_pad(src, offset, grid, fill=7.5, dtype=np.float32)
        assert out.dtype == np.float32 and np.array_equal(out, expect)
    same = crop_or_pad(src, offset, grid, fill=0)
    assert same.dtype == np.int16
    assert np.array_equal(same, np.where(expect == 7.5, 0, expect).astype(np.int16))
