"""The user's own sequences: every layout, task and split; preprocessing; clear errors; serving."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from deploy.bundle.pyfunc import RecurrentModel
from lightning_modules.config import TrainSpec
from lightning_modules.data import build_data, build_datamodule
from lightning_modules.data.identity import data_digest
from lightning_modules.data.sequence_files import DataFileError
from lightning_modules.datasets.sequences import SequencesData
from lightning_modules.training import data_info, load_module, train
from tests.support.paths import ROOT
from tests.support.sequence_data import (
    CLASSES,
    sensor_sequences,
    write_csv,
    write_npz,
    write_parquet,
)


def cfg(url, **kw) -> SequencesData:
    """These tests are about layouts and ratio splits, so a holdout (`auto` would pick folds
    for 240 sequences; test_folds.py and test_splits.py cover those)."""
    return SequencesData(url=str(url), **{"validation": {"holdout": 0.1}, **kw})


@pytest.fixture(scope="module")
def sensors():
    return sensor_sequences()


@pytest.fixture
def parquet(tmp_path, sensors):
    xs, labels, _ = sensors
    return write_parquet(tmp_path / "d.parquet", xs, labels)


def test_parquet_nested_list_column_builds_packed_splits(parquet, sensors):
    data = build_data(cfg(parquet), seed=0)
    xs, _, _ = sensors
    assert data.input_size == 2 and data.out_features == 3
    assert len(data.train) + len(data.val) + len(data.test) == len(xs)
    assert data.train.lengths is not None and int(data.train.lengths.min()) >= 12
    assert data.seq_len == max(len(x) for x in xs)
    # zero past each length (padding never enters the packed computation)
    i = int(torch.argmin(data.train.lengths))
    assert torch.all(data.train.x[i, data.train.lengths[i] :] == 0)
    assert data.extras["preprocessing"]["classes"] == sorted(CLASSES)


def test_standardization_fitted_on_training_split_only(parquet):
    data = build_data(cfg(parquet), seed=0)
    prep = data.extras["preprocessing"]
    # Hand computation: mean/std over every valid training step, from the standardized tensors.
    train = torch.cat([data.train.x[i, :n] for i, n in enumerate(data.train.lengths)])
    assert torch.allclose(train.mean(0), torch.zeros(2), atol=1e-4)
    assert torch.allclose(train.std(0, unbiased=False), torch.ones(2), atol=1e-3)
    test = torch.cat([data.test.x[i, :n] for i, n in enumerate(data.test.lengths)])
    assert not torch.allclose(test.mean(0), torch.zeros(2), atol=1e-4)  # not refitted on test
    assert 95 < prep["mean"][1] < 105 and 15 < prep["std"][1] < 25


def test_ratio_split_is_stratified_and_test_never_moves_with_seed(parquet):
    raw = cfg(parquet, standardize=False)  # statistics follow the seed's training split
    a, b = build_data(raw, seed=0), build_data(raw, seed=1)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.val.x, b.val.x)  # validation is carved by the run's seed
    counts = torch.bincount(a.test.y, minlength=3).float()
    total = torch.bincount(torch.cat([a.train.y, a.val.y, a.test.y]), minlength=3).float()
    assert torch.allclose(counts / counts.sum(), total / total.sum(), atol=0.03)


def test_per_feature_list_columns_and_folder_of_parquet_files(tmp_path, sensors):
    xs, labels, _ = sensors
    write_parquet(tmp_path / "ds" / "part-0.parquet", xs[:120], labels[:120], nested=False)
    write_parquet(tmp_path / "ds" / "part-1.parquet", xs[120:], labels[120:], nested=False)
    folder_cfg = cfg(tmp_path / "ds", feature_columns=["a", "b"])
    data = build_data(folder_cfg, seed=0)
    assert len(data.train) + len(data.val) + len(data.test) == len(xs)
    assert data.extras["preprocessing"]["feature_names"] == ["a", "b"]
    glob_cfg = cfg(f"{tmp_path}/ds/*.parquet", feature_columns=["a", "b"])
    glob = build_data(glob_cfg, seed=0)
    assert data_digest(glob_cfg) != data_digest(folder_cfg)  # a different url is a different source
    assert torch.equal(glob.test.x, data.test.x)


def test_csv_long_format_orders_by_time_column(tmp_path, sensors):
    xs, labels, _ = sensors
    path = write_csv(tmp_path / "d.csv", xs, labels, shuffle=True)
    c = cfg(path, id_column="seq", time_column="t", standardize=False, split_column=None)
    data = build_data(c, seed=0)
    assert data.extras["preprocessing"]["feature_names"] == ["a", "b"]
    # every sequence comes back in time order: compare with the originals by their values
    originals = {round(float(x[0, 0]), 4): x for x in xs}
    for i in range(5):
        n = int(data.test.lengths[i])
        got = data.test.x[i, :n].numpy()
        np.testing.assert_allclose(got, originals[round(float(got[0, 0]), 4)], rtol=1e-5)


def test_npz_padded_with_lengths_and_object_array(tmp_path, sensors):
    xs, labels, _ = sensors
    padded = build_data(cfg(write_npz(tmp_path / "p.npz", xs, labels)), seed=0)
    assert padded.out_features == 3 and int(padded.train.lengths.min()) >= 12
    ragged = write_npz(tmp_path / "o.npz", xs, labels, padded=False)
    with pytest.raises(DataFileError, match="allow_pickle"):
        build_data(cfg(ragged), seed=0)
    trusted = build_data(cfg(ragged, allow_pickle=True), seed=0)
    assert torch.equal(trusted.test.x, padded.test.x)


def test_integer_labels_and_regression_vector_targets(tmp_path, sensors):
    xs, labels, targets = sensors
    ints = [CLASSES.index(y) * 10 for y in labels]
    data = build_data(cfg(write_parquet(tmp_path / "i.parquet", xs, ints)), seed=0)
    assert data.extras["preprocessing"]["classes"] == [0, 10, 20]
    path = write_parquet(
        tmp_path / "r.parquet", xs, labels, freq=targets[:, 0], level=targets[:, 1]
    )
    reg = build_data(cfg(path, task="regression", label_column=["freq", "level"]), seed=0)
    assert reg.out_features == 2 and reg.train.y.shape[1] == 2
    assert torch.allclose(reg.train.y.mean(0), torch.zeros(2), atol=1e-4)  # standardized targets


def test_separate_urls_and_split_column(tmp_path, sensors):
    xs, labels, _ = sensors
    tr = write_parquet(tmp_path / "tr.parquet", xs[:160], labels[:160])
    va = write_parquet(tmp_path / "va.parquet", xs[160:200], labels[160:200])
    te = write_parquet(tmp_path / "te.parquet", xs[200:], labels[200:])
    data = build_data(cfg(tr, val_url=str(va), test_url=str(te)), seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (160, 40, 40)
    split = ["train"] * 150 + ["validation"] * 40 + ["test"] * 50
    col = write_parquet(tmp_path / "c.parquet", xs, labels, part=split)
    data = build_data(cfg(col, split_column="part"), seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (150, 40, 50)


def test_max_len_keeps_first_or_last_steps(parquet):
    last = build_data(cfg(parquet, max_len=10, standardize=False), seed=0)
    first = build_data(cfg(parquet, max_len=10, keep="first", standardize=False), seed=0)
    assert last.seq_len == 10 and int(last.train.lengths.max()) == 10
    assert not torch.equal(last.train.x, first.train.x)


def test_missing_values_refused_with_count_and_place_or_filled(tmp_path, sensors):
    xs, labels, _ = sensors
    xs = [x.copy() for x in xs]
    xs[3][5, 1] = np.nan
    xs[7][0, 0] = np.nan
    path = write_parquet(tmp_path / "m.parquet", xs, labels)
    with pytest.raises(DataFileError, match=r"2 missing .*row 3 step 5 feature 'f1'"):
        build_data(cfg(path), seed=0)
    for how in ("mean", "ffill"):
        data = build_data(cfg(path, missing=how), seed=0)
        assert torch.isfinite(data.train.x).all() and torch.isfinite(data.test.x).all()


@pytest.mark.parametrize(
    "case, message",
    [
        ("wrong_column", r"no column 'label' \(columns: \['sequence', 'target'\]\)"),
        ("bad_lengths", r"'lengths' must hold .* from 1 to"),
        ("empty", "empty file"),
        ("label_varies", r"column 'label' varies within sequence 's1'"),
        ("not_parquet", "not a readable Parquet file"),
        ("missing_file", "no such file or folder"),
        ("unseen_class", r"label 'other' in the test split is not among"),
        ("strings_as_features", r"column 'sequence' is string; expected a list of numbers"),
    ],
)
def test_bad_files_answer_one_clear_error(tmp_path, sensors, case, message):
    xs, labels, _ = sensors
    kw = {}
    if case == "wrong_column":
        path = write_parquet(tmp_path / "w.parquet", xs[:20], labels[:20])
        import pyarrow.parquet as pq

        pq.write_table(pq.read_table(path).rename_columns(["sequence", "target"]), path)
    elif case == "bad_lengths":
        path = tmp_path / "b.npz"
        np.savez(path, x=np.zeros((3, 5, 2)), lengths=np.array([5, 9, 2]), y=np.array([0, 1, 0]))
    elif case == "empty":
        path = tmp_path / "e.csv"
        path.write_text("")
    elif case == "label_varies":
        path = write_csv(tmp_path / "v.csv", xs[:5], labels[:5])
        text = path.read_text().splitlines()
        s1 = [i for i, line in enumerate(text) if line.startswith("s1,")]
        text[s1[-1]] = text[s1[-1]].rsplit(",", 1)[0] + ",zzz"
        path.write_text("\n".join(text))
        kw = {"id_column": "seq", "time_column": "t"}
    elif case == "not_parquet":
        path = tmp_path / "n.parquet"
        path.write_text("not parquet at all")
    elif case == "missing_file":
        path = tmp_path / "nowhere.parquet"
    elif case == "unseen_class":
        tr = write_parquet(tmp_path / "tr.parquet", xs[:50], labels[:50])
        path = tr
        te = write_parquet(tmp_path / "te.parquet", xs[50:60], ["other"] * 10)
        kw = {"test_url": str(te)}
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "s.parquet"
        pq.write_table(pa.table({"sequence": ["a", "b"], "label": ["x", "y"]}), path)
    with pytest.raises(DataFileError, match=message) as err:
        build_data(cfg(path, **kw), seed=0)
    assert "\n" not in str(err.value)


def test_learns_and_serves_raw_sequences_with_label_names(tmp_path, parquet, sensors):
    """A GRU learns the sensor classes; the pyfunc takes raw, ragged steps and answers in the
    user's labels, applying the training split's standardization (checked by hand)."""
    spec = TrainSpec.model_validate(
        {
            "data": {"name": "sequences", "url": str(parquet)},
            "model": {"cell_type": "gru", "hidden_size": 32, "bidirectional": True},
            "optim": {"lr": 0.01, "batch_size": 32},
            "trainer": {"max_epochs": 15, "threads": 1, "diagnostics": False},
        }
    )
    result = train(spec, tmp_path / "run", logger=False, enable_progress_bar=False)
    assert result.test["test_acc"] > 0.8, result.test
    module = load_module(result.checkpoint)
    data = build_data(spec.data, seed=0)
    model = RecurrentModel().attach(module.net, module.spec, data_info(data))
    xs, labels, _ = sensors
    raw = [xs[0], xs[1][:20]]  # raw steps, different lengths
    frame = model.predict(None, [x.tolist() for x in raw])
    assert set(frame["label"]) <= set(CLASSES)
    prep = data.extras["preprocessing"]
    mean, std = np.array(prep["mean"], np.float32), np.array(prep["std"], np.float32)
    with torch.no_grad():
        by_hand = [
            module.net(torch.from_numpy((x - mean) / std)[None]).softmax(-1)[0].numpy() for x in raw
        ]
    np.testing.assert_allclose(frame[["prob_0", "prob_1", "prob_2"]].to_numpy(), by_hand, atol=1e-5)
    assert list(frame["label"]) == [prep["classes"][int(np.argmax(p))] for p in by_hand]
    # The same sequences NaN-padded into one (N, T, F) array: trailing NaN steps are padding.
    padded = np.full((2, len(xs[0]), 2), np.nan, np.float32)
    padded[0], padded[1, :20] = raw[0], raw[1]
    np.testing.assert_allclose(model.predict(None, padded)["prob_0"], frame["prob_0"], atol=1e-6)
    # ... and so they are in a list of sequences, the form `rnntune serve` parses alike
    listed = [padded[0].tolist(), padded[1].tolist()]
    np.testing.assert_allclose(model.predict(None, listed)["prob_0"], frame["prob_0"], atol=1e-6)
    with pytest.raises(ValueError, match=r"^inputs\[1\]: contains NaN \(missing\) values"):
        model.predict(None, [raw[0].tolist(), [[0.0, math.nan], [1.0, 1.0]]])


def test_dataset_from_s3(moto_s3, sensors):
    import s3fs

    xs, labels, _ = sensors
    fs = s3fs.S3FileSystem(endpoint_url=moto_s3)
    fs.mkdir("userdata")
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    table = pa.table(
        {
            "sequence": pa.array([x.tolist() for x in xs], pa.list_(pa.list_(pa.float32()))),
            "label": labels,
        }
    )
    pq.write_table(table, buf)
    fs.pipe("userdata/sensors/part-0.parquet", buf.getvalue())
    data = build_data(cfg("s3://userdata/sensors/"), seed=0)
    assert len(data.train) + len(data.val) + len(data.test) == len(xs)
    assert data.out_features == 3


def test_datamodule_batches_trim_padding(parquet):
    data = build_data(cfg(parquet), seed=0)
    dm = build_datamodule(cfg(parquet), data, batch_size=8, seed=0)
    for x, lengths, _ in dm.train_dataloader():
        assert x.shape[1] == int(lengths.max())


@pytest.mark.slow  # a CLI or Ray process of its own: seconds
def test_cli_data_inspect_prints_splits_and_a_data_block(parquet):
    cli = [sys.executable, "-m", "service.cli", "data", "inspect", str(parquet)]
    out = subprocess.run(cli, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "sequences: train " in out.stdout and "3 classes" in out.stdout
    assert "steps per sequence (train): min 12" in out.stdout
    assert "name: sequences" in out.stdout and f"url: {parquet}" in out.stdout
    bad = subprocess.run([*cli, "--label-column", "nope"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "no column 'nope'" in bad.stderr


def test_streamed_parquet_matches_in_memory_splits_and_statistics(tmp_path, sensors):
    xs, labels, _ = sensors
    path = write_parquet(tmp_path / "d.parquet", xs, labels)  # row groups of 50
    mem = build_data(cfg(path, reader="memory"), seed=3)
    stream = build_data(cfg(path, reader="stream"), seed=3)
    assert stream.extras == mem.extras and stream.seq_len == mem.seq_len
    assert [len(s) for s in (stream.train, stream.val, stream.test)] == [
        len(s) for s in (mem.train, mem.val, mem.test)
    ]
    dm = build_datamodule(cfg(path), stream, 32, seed=3)
    got = [(x, n, y) for x, n, y in dm.test_dataloader()]
    x = torch.cat([b[0][i, : b[1][i]].flatten() for b in got for i in range(len(b[1]))])
    want = torch.cat([mem.test.x[i, : mem.test.lengths[i]].flatten() for i in range(len(mem.test))])
    assert torch.allclose(x.sort().values, want.sort().values)
    epoch = [y for _, _, y in dm.train_dataloader()]
    assert sum(len(y) for y in epoch) == len(mem.train)


@pytest.mark.parametrize("options", [{"limit": 90}, {"split_column": "split"}])
def test_both_readers_assign_the_same_rows(tmp_path, sensors, options):
    """One split rule (splits.assign_rows): in memory and streamed, the same rows of each split,
    with a training sample (`limit`) and with a split column."""
    xs, labels, _ = sensors
    split = np.array(["train", "validation", "TEST", "train", "valid"] * len(xs))[: len(xs)]
    path = write_parquet(tmp_path / "d.parquet", xs, labels, split=split)
    mem = build_data(cfg(path, reader="memory", **options), seed=5)
    stream = build_data(cfg(path, reader="stream", **options), seed=5)
    for name in ("train", "val", "test"):
        m, s = getattr(mem, name), getattr(stream, name)
        assert len(m) == len(s), name
        got = s.head(len(s))
        assert torch.equal(got.y.sort().values, m.y.sort().values), name
        assert torch.allclose(got.x.sum((1, 2)).sort().values, m.x.sum((1, 2)).sort().values)
    if "limit" in options:
        assert len(mem.train) + len(mem.val) == 90


def test_streamed_data_is_scored_on_a_holdout_never_folds(tmp_path, sensors):
    xs, labels, _ = sensors
    path = write_parquet(tmp_path / "d.parquet", xs, labels)
    auto = SequencesData(url=str(path), reader="stream")  # `auto` on 240 in memory: folds
    assert build_data(auto, seed=0).folds is None and len(build_data(auto, seed=0).val) > 0
    for validation in ({"folds": 5}, "none"):
        with pytest.raises(DataFileError, match=r"^data\.validation: folds and refits hold"):
            build_data(cfg(path, reader="stream", validation=validation), seed=0)


def test_streamed_ranks_read_disjoint_row_groups(tmp_path, sensors):
    from lightning_modules.data.parquet_stream import ParquetBatches

    xs, labels, _ = sensors
    path = write_parquet(tmp_path / "d.parquet", xs, labels)
    data = build_data(cfg(path, reader="stream"), seed=0)
    seen = []
    for rank in (0, 1):
        shard = ParquetBatches(data.train, 16, shuffle=True, seed=0, rank=rank, world=2).shard(1)
        seen.append({row for row, _, _ in data.train.rows(shard)})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == len(data.train)
    # DDP: both ranks take the same number of steps, even with shards of different sizes
    steps = [
        sum(1 for _ in ParquetBatches(data.train, 16, True, 0, rank, 2, steps=6)) for rank in (0, 1)
    ]
    assert steps == [6, 6]


def test_spec_refuses_what_cannot_apply_to_user_data():
    from lightning_modules.config import SpecError, validate_spec
    from tune.spec import parse_job_spec

    with pytest.raises(SpecError, match=r"^model\.readout: linear_all reads a fixed number"):
        parse_job_spec(
            {"data": {"name": "sequences", "url": "x.parquet"}, "model": {"readout": "linear_all"}}
        )
    with pytest.raises(SpecError, match=r"^data\.split_column: give a split column or"):
        validate_spec(
            TrainSpec,
            {"data": {"name": "sequences", "url": "x", "split_column": "s", "test_url": "y"}},
            "spec",
        )
    with pytest.raises(SpecError, match=r"^data\.label_column: classification takes one"):
        validate_spec(
            TrainSpec, {"data": {"name": "sequences", "url": "x", "label_column": ["a", "b"]}}, "s"
        )
    job = parse_job_spec({"data": {"name": "sequences", "url": "x.parquet"}})
    assert set(job.space) >= {"cell_type", "num_layers", "hidden_size", "bidirectional", "lr"}
    assert job.monitor == ("val_acc", "max")
    reg = parse_job_spec({"data": {"name": "sequences", "url": "x", "task": "regression"}})
    assert reg.task == "regression" and reg.monitor == ("val_loss", "min")
