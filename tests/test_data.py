"""Data pipelines: shapes, determinism, resumable/sharded streams, augmentation invariants on
real clips from ../shared/videos, the Vimeo layout (issue 4)."""
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from zsm_tf.data import (
    SyntheticClips,
    VideoFolder,
    VimeoSeptuplets,
    apply_ops,
    augment_pair,
    downscale,
    index_stream,
    make_pair,
    make_source,
    shard_stream,
    train_dataset,
)
from zsm_tf.data.video_clips import probe, read_frames

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VIDEOS = SHARED / "videos"
CLIPS = ["realshort.mp4", "again.mkv"]  # H.264 + AAC in MP4, H.264 in MKV


@pytest.fixture(scope="module")
def videos():
    missing = [c for c in CLIPS if not (VIDEOS / c).is_file()]
    if missing:
        pytest.fail(f"real clips missing under {VIDEOS}: {missing}")
    return VideoFolder(VIDEOS, frames=7, hr_patch=32, files=[VIDEOS / c for c in CLIPS])


def _take(ds, n):
    return [tuple(x.numpy() for x in el) for el in ds.take(n)]


def test_synthetic_clips_shapes_motion_determinism():
    src = SyntheticClips(hr_size=32, frames=7, seed=5)
    a = make_pair(src, tf.constant(3, tf.int64), tf.constant(3, tf.int64), 0)
    b = make_pair(src, tf.constant(3, tf.int64), tf.constant(3, tf.int64), 0)
    lr, hr = a
    assert lr.shape == (4, 8, 8, 3) and hr.shape == (7, 32, 32, 3)
    assert lr.dtype == tf.float32 and hr.dtype == tf.float32
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    moving = 0
    for i in range(6):
        clip = src.load(None, tf.constant(i, tf.int64), None)["hr"].numpy()
        assert 0.0 <= clip.min() and clip.max() <= 1.0 and clip.std() > 0.02  # textured
        moving += np.abs(clip[-1] - clip[0]).mean() > 0.005
    assert moving >= 4  # most scenes move


def test_index_stream_resume_epochs_and_shards():
    full = [(int(k), int(i)) for k, i in index_stream(5, seed=3).take(23)]
    assert [k for k, _ in full] == list(range(23))
    for e in range(4):  # every epoch visits every item once, in a seed-dependent order
        assert sorted(i for _, i in full[5 * e:5 * e + 5]) == list(range(5))
    assert [i for _, i in full[:5]] != [i for _, i in full[5:10]]
    resumed = [(int(k), int(i)) for k, i in index_stream(5, seed=3, start=7).take(16)]
    assert resumed == full[7:23]
    # two input pipelines of a global batch of 4 together give the global order
    shards = [[int(k) for k, _ in shard_stream(index_stream(5, 3), 4, p, 2).take(6)]
              for p in range(2)]
    assert shards == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]]
    assert [int(k) for k, _ in index_stream(None, 0, start=9).take(3)] == [9, 10, 11]


def test_train_dataset_resumes_mid_stream():
    src = SyntheticClips(hr_size=16, frames=3, seed=1)
    first = _take(train_dataset(src, global_batch=2, seed=4), 3)
    later = _take(train_dataset(src, global_batch=2, seed=4, start_sample=4), 1)
    assert first[0][0].shape == (2, 2, 4, 4, 3) and first[0][1].shape == (2, 3, 16, 16, 3)
    np.testing.assert_array_equal(first[2][0], later[0][0])
    np.testing.assert_array_equal(first[2][1], later[0][1])


def test_augment_ops_transform_inputs_and_targets_alike():
    rng = np.random.default_rng(0)
    lr = rng.random((4, 6, 6, 3), np.float32)
    hr = rng.random((7, 24, 24, 3), np.float32)
    np.testing.assert_array_equal(apply_ops(lr, hflip=True), lr[:, :, ::-1])
    np.testing.assert_array_equal(apply_ops(hr, vflip=True), hr[:, ::-1])
    np.testing.assert_array_equal(apply_ops(hr, rot90=True), hr.transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(apply_ops(lr, reverse=True), lr[::-1])
    combos = [dict(hflip=a, vflip=b, rot90=c, reverse=d) for a in (0, 1) for b in (0, 1)
              for c in (0, 1) for d in (0, 1)]
    seen = set()
    for s in range(24):
        a_lr, a_hr = augment_pair(lr, hr, tf.constant([7, s], tf.int64))
        i_lr = [j for j, c in enumerate(combos)
                if np.array_equal(apply_ops(lr, **{k: bool(v) for k, v in c.items()}), a_lr)]
        i_hr = [j for j, c in enumerate(combos)
                if np.array_equal(apply_ops(hr, **{k: bool(v) for k, v in c.items()}), a_hr)]
        assert len(i_lr) == 1 and i_lr == i_hr  # the same op on both
        seen.add(i_lr[0])
    assert len(seen) >= 8  # the ops are actually random


def test_video_windows_match_sequential_decoding(videos):
    import av

    for v in videos.videos:
        with av.open(v["path"]) as c:
            ref = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        assert len(ref) == len(v["pts"])
        for start in (0, len(ref) // 2, len(ref) - 7):
            got = read_frames(v["path"], v["pts"], start, 7, box=(8, 16, 32, 40))
            np.testing.assert_array_equal(got, ref[start:start + 7, 8:40, 16:56])
    assert probe(VIDEOS / "README.md") is None


def test_video_pipeline_pairs_are_consistent_after_augmentation(videos):
    ds = train_dataset(videos, global_batch=4, seed=2)
    lr, hr = _take(ds, 1)[0]
    assert lr.shape == (4, 4, 8, 8, 3) and hr.shape == (4, 7, 32, 32, 3)
    assert hr.std() > 0.02
    # inputs are the bicubic x4 of target frames 1, 3, 5, 7, whatever flip / rotation / time
    # reversal was drawn: flipping the input flipped the target the same way
    np.testing.assert_allclose(downscale(hr[:, ::2].reshape(-1, 32, 32, 3)).numpy(),
                               lr.reshape(-1, 8, 8, 3), atol=1 / 255 + 1e-4)
    # real motion: consecutive frames differ but are close
    d = np.abs(hr[:, 1:] - hr[:, :-1]).mean()
    assert 0 < d < 0.2


def _write_vimeo(root, lr_root, n=2, h=48, w=64):
    from PIL import Image

    rng = np.random.default_rng(1)
    ids = [f"0000{i + 1}/0001" for i in range(n)]
    for sid in ids:
        for f in range(7):
            small = rng.integers(0, 256, (h // 4, w // 4, 3), np.uint8)
            big = small.repeat(4, 0).repeat(4, 1)  # HR blocks: LR = every 4th pixel
            d = root / "sequences" / sid
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(big).save(d / f"im{f + 1}.png")
            d = lr_root / "sequences" / sid
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(small).save(d / f"im{f + 1}.png")
    (root / "sep_trainlist.txt").write_text("\n".join(ids) + "\n")
    (root / "sep_testlist.txt").write_text(ids[0] + "\n")


def test_vimeo_septuplets_with_prepared_lr(tmp_path):
    root, lr_root = tmp_path / "vimeo", tmp_path / "vimeo_lr"
    _write_vimeo(root, lr_root)
    src = VimeoSeptuplets(root, "train", hr_patch=32, lr_dir=lr_root)
    assert src.num_items == 2
    for lr, hr in _take(train_dataset(src, global_batch=2, seed=0), 3):
        assert lr.shape == (2, 4, 8, 8, 3) and hr.shape == (2, 7, 32, 32, 3)
        # the LR crop is exactly the HR crop's LR (aligned), after the same augmentation
        np.testing.assert_array_equal(hr[:, ::2, ::4, ::4], lr)
    val = make_source(f"vimeo:{root}", hr_patch=32, validation=True)
    assert val.num_items == 1 and val.crop == "center"
    lr, hr = make_pair(val, tf.constant(0, tf.int64), tf.constant(0, tf.int64), 0, augment=False)
    assert lr.shape == (4, 8, 8, 3) and hr.shape == (7, 32, 32, 3)  # LR made on the fly


def test_make_source_specs(tmp_path):
    assert make_source("synthetic", hr_patch=16).num_items is None
    assert make_source("synthetic:3", hr_patch=16).num_items == 3
    for bad in ("imagenet:x", "vimeo", "videos:"):
        with pytest.raises(ValueError):
            make_source(bad)
    with pytest.raises(FileNotFoundError):
        make_source(f"videos:{tmp_path}")


def test_video_windows_of_frames_two_apart(shared_dir):
    """data.frame_step: a window of 7 frames 2 apart is every other frame of a 13-frame window."""
    from zsm_tf.data.video_clips import VideoFolder

    kw = dict(hr_patch=64, crop="center", exclude=("again.mkv", "night.mkv"))
    step2 = VideoFolder(shared_dir / "videos", 7, frame_step=2, **kw)
    span = VideoFolder(shared_dir / "videos", 13, **kw)
    assert step2.num_items == span.num_items and "frames 2 apart" in step2.describe()
    assert "2 held out" in step2.describe()
    assert not {Path(v["path"]).name for v in step2.videos} & {"again.mkv", "night.mkv"}
    for item in (0, step2.num_items // 2):
        np.testing.assert_array_equal(step2.read(item), span.read(item)[::2])


def test_video_camera_pans_from_one_frame(shared_dir):
    """data.pan_fraction: an item is a window moving (dx, dy) px/frame over one real frame."""
    from zsm_tf.data.video_clips import VideoFolder

    src = VideoFolder(shared_dir / "videos", 7, 64, exclude=("again.mkv",), pan_fraction=1.0, pan_max=16)
    clip = src.read(3, 0.3, 0.7, pan=(10, -6))
    assert clip.shape == (7, 64, 64, 3) and clip.std() > 5
    for t in range(1, 7):   # frame t is frame 0 moved by t * (10, -6): exact pixels
        np.testing.assert_array_equal(clip[t][6 * t:, :64 - 10 * t], clip[0][:64 - 6 * t, 10 * t:])
    assert "camera pans of up to 16 px/frame" in src.describe()
    plain = VideoFolder(shared_dir / "videos", 7, 64, exclude=("again.mkv",))
    np.testing.assert_array_equal(src.read(3, 0.3, 0.7, pan=(0, 0)), plain.read(3, 0.3, 0.7))
    with pytest.raises(ValueError, match="pan_fraction"):
        VideoFolder(shared_dir / "videos", 7, 64, pan_fraction=2.0)
