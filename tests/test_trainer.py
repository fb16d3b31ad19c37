import csv
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from spikevimformer.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from spikevimformer.cli import main
from spikevimformer.engine import NonFiniteLoss, Trainer, load_config
from spikevimformer.engine.config import TrainConfig
from spikevimformer.engine.schedule import warmup_cosine, warmup_steps
from spikevimformer.losses import CollapseWatch
from tests.fake_datasets import make_university

TINY = {"image_size": 32, "batch_size": 4, "workers": 0, "augment": False, "hral_k": 3, "hral_k2": 2,
        "hral_history": 8, "save_every_steps": 0, "eval_every_epochs": 0}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_university(tmp_path_factory.mktemp("world"), train=8, test=3, distractors=1, drone=3)


def losses(run: Path) -> list[float]:
    with (run / "log.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.001\nvariant: small\n")
    cfg = load_config(path, ["epochs=3", "w_hral=0", "augment=false"])
    assert (cfg.lr, cfg.variant, cfg.epochs, cfg.w_hral, cfg.augment) == (0.001, "small", 3, 0.0, False)
    with pytest.raises(ValueError, match="unknown setting"):
        load_config(None, ["nonsense=1"])
    with pytest.raises(ValueError, match="augment expects bool"):
        load_config(None, ["augment=maybe"])
    assert load_config(None, ["lr=1e-4", "init=1234"]).lr == 1e-4  # YAML 1.1 reads 1e-4 as a string
    with pytest.raises(ValueError, match="cannot exceed similar_pool"):
        load_config(None, ["similar_locations=20"])
    assert load_config(None, ["init=1234"]).init == "1234"
    assert load_config(None, ['extra_train_roots=["a b", "c"]']).extra_train_roots == ["a b", "c"]
    assert load_config(None, {"extra_train_roots": "a"}).extra_train_roots == ["a"]
    with pytest.raises(ValueError, match="extra_train_roots expects list"):
        load_config(None, {"extra_train_roots": 3})
    with pytest.raises(ValueError, match="extra_train_roots expects list"):
        load_config(None, {"extra_train_roots": {"a": 1}})
    with pytest.raises(ValueError, match="batch_size expects int"):
        load_config(None, ["batch_size=2.5"])
    with pytest.raises(ValueError, match="lr expects float"):
        load_config(None, {"lr": "fast"})
    from spikevimformer.losses import ObjectiveConfig

    assert load_config(None, ["w_hral=0", "hral_k=5", "label_smoothing=0"]).objective() == ObjectiveConfig(
        hral=0.0, hral_k=5, label_smoothing=0.0)


def test_cosine_follows_the_larger_of_step_and_time_shares():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    share = {"t": 0.0}
    sched = warmup_cosine(opt, total_steps=102, warmup=2, time_share=lambda: share["t"])
    rates = []
    for t in (0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 2.0):
        share["t"] = t
        opt.step()
        sched.step()
        rates.append(sched.get_last_lr()[0])
    # steps 1-2: warm-up (the step share is ~0 afterwards); then the time share rules: 0 -> 1, 0.5 -> 0.5, >= 1 -> 0
    assert rates == pytest.approx([1.0, 1.0, 0.99975, 0.5, 0.5, 0.0, 0.0], abs=1e-4)


def _ten_second_steps(monkeypatch, interrupt_at: int = 0) -> dict[str, float]:
    """A fake clock that advances 10 s per training step; optionally Ctrl-C before step `interrupt_at`."""
    clock = {"now": 0.0, "calls": 0}
    original = Trainer.train_step

    def step(self, *batch):
        clock["calls"] += 1
        if clock["calls"] == interrupt_at:
            raise KeyboardInterrupt
        out = original(self, *batch)
        clock["now"] += 10.0
        return out

    monkeypatch.setattr(Trainer, "train_step", step)
    monkeypatch.setattr(Trainer, "clock", lambda self: clock["now"])
    return clock


def _time_boxed(world, out, anneal_by="time"):
    return load_config(None, {**TINY, "data_root": str(world), "out_dir": str(out), "epochs": 50, "lr": 1e-3,
                              "warmup": 0.0, "warmup_min_steps": 2, "time_limit_min": 1.0, "anneal_by": anneal_by})


def _rates(run: Path) -> list[float]:
    return [float(r["lr"]) / 1e-3 for r in csv.DictReader((run / "log.csv").open())]


# warm-up over steps 1-2 (ends at 20 s); then the cosine over the 40 s left: 0, 1/4, 1/2, 3/4 of it used
TIME_BOXED_RATES = [0.5, 1, 1, 0.85355, 0.5, 0.14645]


@pytest.mark.parametrize("anneal_by", ["steps", "time"])
def test_a_time_boxed_run_anneals_by_its_budget(world, tmp_path, monkeypatch, anneal_by):
    _ten_second_steps(monkeypatch)
    result = Trainer(_time_boxed(world, tmp_path, anneal_by), progress=False).fit()
    assert result["stop_reason"] == "time limit" and result["steps"] == 6  # 60 s used after the 6th step
    rates = _rates(tmp_path)
    if anneal_by == "steps":  # the 300-step cosine has barely started when the time is up
        assert rates[0] == 0.5 and min(rates[1:]) > 0.99
    else:
        assert rates == pytest.approx(TIME_BOXED_RATES, abs=1e-4)
        progress = load_checkpoint(tmp_path / "last.pt")["train_state"]["progress"]
        assert (progress["seconds"], progress["warm_seconds"]) == (60.0, 20.0)


def test_a_time_limit_keeps_room_for_the_final_evaluation(world, tmp_path, monkeypatch):
    _ten_second_steps(monkeypatch)
    monkeypatch.setattr(Trainer, "_eval_seconds", lambda self: 25.0)
    result = Trainer(_time_boxed(world, tmp_path), progress=False).fit()
    # 60 s less 25 s for the evaluation: a 4th 10 s step would end at 40 s, past the 35 s left for training
    assert (result["stop_reason"], result["steps"]) == ("time limit", 3) and result["metrics"]


def test_a_time_annealed_run_resumes_on_its_own_clock(world, tmp_path, monkeypatch):
    _ten_second_steps(monkeypatch, interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_time_boxed(world, tmp_path), progress=False).fit()
    assert load_checkpoint(tmp_path / "last.pt")["train_state"]["progress"]["seconds"] == 30.0
    result = Trainer(_time_boxed(world, tmp_path), resume=tmp_path, progress=False).fit()
    assert result["steps"] == 6 and _rates(tmp_path) == pytest.approx(TIME_BOXED_RATES, abs=1e-4)
    # the budget counts over sessions: once spent, a resume trains no further
    again = Trainer(_time_boxed(world, tmp_path), resume=tmp_path, progress=False).fit()
    assert (again["steps"], again["stop_reason"]) == (6, "time limit")


def test_time_annealing_needs_a_time_budget(world, tmp_path):
    with pytest.raises(ValueError, match="time_limit_min"):
        Trainer(load_config(None, {**TINY, "data_root": str(world), "out_dir": str(tmp_path), "anneal_by": "time"}))
    with pytest.raises(ValueError, match="anneal_by must be one of steps, time"):
        Trainer(load_config(None, {**TINY, "data_root": str(world), "out_dir": str(tmp_path), "anneal_by": "wall"}))
    no_warmup = Trainer(load_config(None, {**TINY, "data_root": str(world), "out_dir": str(tmp_path), "warmup": 0.0,
                                           "warmup_min_steps": 0, "time_limit_min": 1.0, "anneal_by": "time"}))
    assert no_warmup.warmup == 0 and no_warmup.optimizer.param_groups[0]["lr"] == no_warmup.cfg.lr


def test_warmup_has_a_floor_in_steps():
    assert warmup_steps(1000, 0.1, 20) == 100
    assert warmup_steps(50, 0.1, 20) == 20
    assert warmup_steps(40, 0.1, 20) == 20
    assert warmup_steps(10, 0.1, 20) == 5  # the floor takes at most half a short run: it still anneals
    assert warmup_steps(1, 0.1, 20) == 0


def test_cli_end_to_end_writes_run_folder(world, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--data-root", str(world), "--out", str(run), "--max-steps", "3", "--no-progress",
               "--set", *(f"{k}={v}" for k, v in TINY.items())])
    assert rc == 0
    assert {"config.yaml", "log.csv", "last.pt", "best.pt"} <= {p.name for p in run.iterdir()}
    best = load_checkpoint(run / "best.pt")  # what inference and fine-tuning need, no optimizer or HRAL memory
    assert "optimizer" not in best and "train_state" not in best and best["image_size"] == TINY["image_size"]
    assert (run / "best.pt").stat().st_size < min(45e6, 0.5 * (run / "last.pt").stat().st_size)  # README: sizes
    assert model_from_checkpoint(run / "best.pt").image_size == TINY["image_size"]
    log = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["step"]) for r in log] == [1, 2, 3]
    assert {"loss", "infonce", "ssa", "shs", "hral", "lr", "pairs_per_s"} <= set(log[0])
    final = load_checkpoint(run / "last.pt")
    directions = {r["direction"] for r in final["metrics"]["final"]}
    assert directions == {"drone2satellite", "satellite2drone"}
    assert "drone2satellite" in capsys.readouterr().out


RESUME_SCRIPT = """
import json, sys
from spikevimformer.engine import Trainer, load_config
import os, signal
settings, out, stop = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
Trainer(load_config(None, {**settings, "out_dir": out + "/a"}), progress=False).fit()
original, calls = Trainer.train_step, {"n": 0}
def interrupt_at_6(self, *batch):
    calls["n"] += 1
    if stop == "raise" and calls["n"] == 6:
        raise KeyboardInterrupt  # mid-epoch, mid-step: the run keeps step 5
    if stop == "signal" and self.batches_done + 1 == len(self.sampler) and calls.setdefault("sent", 0) == 0:
        calls["sent"] = 1
        os.kill(os.getpid(), signal.SIGTERM)  # Ctrl-C's path: finish this step, the first epoch's last, then stop
    return original(self, *batch)
Trainer.train_step = interrupt_at_6
cfg_b = load_config(None, {**settings, "out_dir": out + "/b"})
try:
    Trainer(cfg_b, progress=False).fit()
    raise SystemExit("the interruption did not happen")
except KeyboardInterrupt:
    pass
Trainer.train_step = original
Trainer(cfg_b, resume=out + "/b", progress=False).fit()
"""


@pytest.mark.parametrize("batches,stop", [({}, "raise"), ({"similar_locations": 1, "similar_pool": 3}, "raise"),
                                          ({"eval_every_epochs": 1}, "signal")],
                         ids=["random", "look-alikes", "at-an-epoch-end-with-evaluation"])
def test_interrupted_and_resumed_run_matches_uninterrupted(world, tmp_path, batches, stop):
    # A fresh interpreter, so no state left by other tests (threads, RNG users) can touch either run.
    import json
    import subprocess
    import sys

    # with augmentation and a data worker: each sample's draw comes from its own seed, so even that replays;
    # look-alike batches: the interrupted epoch's plan comes from the checkpoint, the next from the weights;
    # stopped at an epoch's end, the uninterrupted run evaluates there and the resumed one does not, so the
    # evaluation must leave the random streams alone
    settings = {**TINY, "data_root": str(world), "epochs": 2, "max_steps": 8, "augment": True, "workers": 1,
                **batches}
    subprocess.run([sys.executable, "-c", RESUME_SCRIPT, json.dumps(settings), str(tmp_path), stop], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["train_state"]["progress"]["step"] == 8
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert len(a) == len(b) == 8
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    # the weights too: a random draw spent differently after resuming (a DataLoader seeding itself from the
    # global RNG did) changes dropout masks and so the weights, even where the logged losses still agree
    final_a, final_b = (load_checkpoint(tmp_path / r / "last.pt")["model"] for r in "ab")
    for key, value in final_a.items():
        torch.testing.assert_close(final_b[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_resume_refuses_a_corrupt_checkpoint(world, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"\x80\x02not really a checkpoint")
    cfg = load_config(None, {**TINY, "data_root": str(world), "out_dir": str(run)})
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        Trainer(cfg, resume=run, progress=False)


def test_non_finite_loss_stops_with_step_and_keeps_last_good(world, tmp_path, monkeypatch):
    cfg = load_config(None, {**TINY, "data_root": str(world), "out_dir": str(tmp_path), "save_every_steps": 1,
                             "max_steps": 5})
    trainer = Trainer(cfg, progress=False)
    original = trainer.objective.forward

    def poisoned(*args, **kwargs):
        total, terms = original(*args, **kwargs)
        return (total * float("nan") if trainer.step == 2 else total), terms

    monkeypatch.setattr(trainer.objective, "forward", poisoned)
    with pytest.raises(NonFiniteLoss, match="at step 3"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "last.pt")["train_state"]["progress"]["step"] == 2


def test_extra_train_roots_add_their_locations_and_keep_evaluation_on_data_root(world, tmp_path):
    other = make_university(tmp_path / "other", train=5, test=2, distractors=0, drone=2)
    run = tmp_path / "run"
    rc = main(["train", "--data-root", str(world), "--extra-train-roots", str(other), "--out", str(run),
               "--max-steps", "1", "--no-progress", "--set", *(f"{k}={v}" for k, v in TINY.items())])
    assert rc == 0
    assert load_config(run / "config.yaml").extra_train_roots == [str(other)]
    trainer = Trainer(load_config(run / "config.yaml"), progress=False)
    classes = trainer.train_pairs.classes
    assert len(classes) == 8 + 5 and len(trainer.train_pairs) == 8 * 3 + 5 * 2
    assert {c.split("/")[0] for c in classes} == {"0", "1"}  # the same location id in two worlds stays apart
    assert trainer.model.classifier.fc.out_features == 13
    assert len(trainer.bench.test["drone2satellite"][1].paths) == 3 + 1  # data_root's gallery only
    with pytest.raises(ValueError, match="no training pairs"):
        Trainer(load_config(None, {**TINY, "data_root": str(world), "out_dir": str(tmp_path / "x"),
                                   "extra_train_roots": [str(make_university(tmp_path / "t", train=0, test=2))]}))


def test_batch_larger_than_locations_is_refused(world, tmp_path):
    with pytest.raises(ValueError, match="exceeds the 8 training locations"):
        Trainer(load_config(None, {**TINY, "data_root": str(world), "batch_size": 16, "out_dir": str(tmp_path)}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_step(rank: int, world_size: int, cfg: TrainConfig, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = Trainer(cfg, progress=False)
    batch = next(iter(trainer._loader()))
    values = trainer.train_step(*batch)
    if rank == 0:
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        torch.save({"values": values, "grads": grads}, out)
    torch.distributed.destroy_process_group()


def test_two_process_ddp_equals_one_process_with_the_global_batch(world, tmp_path):
    # BatchNorm on running statistics and no dropout: what remains is exactly the global-batch losses.
    cfg = load_config(None, {**TINY, "data_root": str(world), "out_dir": str(tmp_path / "r"), "bn": "frozen",
                             "shs_dropout": 0.0, "grad_clip": 1e9, "hral_history": 0})
    single = Trainer(cfg, progress=False)
    ref_values = single.train_step(*next(iter(single._loader())))
    ref = {n: p.grad.clone() for n, p in single.model.named_parameters() if p.grad is not None}
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_first_step, args=(2, cfg, _free_port(), out), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    for term in ("loss", "infonce", "ssa", "shs", "hral"):
        assert ddp["values"][term] == pytest.approx(ref_values[term], rel=1e-5), term
    assert set(ddp["grads"]) == set(ref)
    for name, grad in ref.items():
        torch.testing.assert_close(ddp["grads"][name], grad, rtol=2e-4, atol=1e-6, msg=name)


def test_shipped_configs_load():
    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert len(configs) >= 6
    for path in configs:
        cfg = load_config(path)
        assert cfg.variant in ("tiny", "small") and cfg.image_size % 16 == 0, path


@pytest.mark.parametrize("at_call", [3, 6])  # mid-epoch, and the last of the epoch's 6 steps
def test_sigterm_saves_at_the_next_step_boundary(world, tmp_path, monkeypatch, at_call):
    import signal

    original = Trainer.train_step
    calls = {"n": 0}

    def terminate_during_a_step(self, *batch):
        calls["n"] += 1
        if calls["n"] == at_call:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *batch)

    monkeypatch.setattr(Trainer, "train_step", terminate_during_a_step)
    cfg = load_config(None, {**TINY, "data_root": str(world), "out_dir": str(tmp_path), "epochs": 2})
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, progress=False).fit()
    # the signal arrived during a step: that step finishes, then the run saves and stops
    progress = load_checkpoint(tmp_path / "last.pt")["train_state"]["progress"]
    assert progress["step"] == at_call == len(losses(tmp_path))
    # stopped on an epoch's last step, the checkpoint already points at the next epoch (resume must not redo it)
    assert (progress["epoch"], progress["batches_done"]) == ((1, 0) if at_call == 6 else (0, at_call))
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_init_from_official_weights_or_our_checkpoint_reads_the_file_once(world, tmp_path, monkeypatch):
    import spikevimformer.checkpoint as ckpt
    from tests.test_checkpoint import official_state

    official = tmp_path / "V3_10.0M_1x4.pth"
    torch.save({"model": official_state("tiny")}, official)
    reads = []
    real_read = ckpt._read
    monkeypatch.setattr(ckpt, "_read", lambda path: reads.append(path) or real_read(path))
    trainer = Trainer(load_config(None, {**TINY, "data_root": str(world), "out_dir": str(tmp_path / "a"),
                                         "init": str(official)}), progress=False)
    assert [str(p) for p in reads] == [str(official)]
    conv = "downsample1_1.encode_conv.weight"
    assert torch.equal(trainer.model.backbone.state_dict()[conv], official_state("tiny")[conv])

    trainer.save("last.pt")
    reads.clear()
    again = Trainer(load_config(None, {**TINY, "data_root": str(world), "out_dir": str(tmp_path / "b"),
                                       "init": str(tmp_path / "a" / "last.pt")}), progress=False)
    assert len(reads) == 1
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value), key


def test_fresh_ssa_keeps_everything_from_the_init_but_the_ssa_branch(world, tmp_path, capsys):
    base = {**TINY, "data_root": str(world), "ssa_objective": "paper"}
    first = Trainer(load_config(None, {**base, "out_dir": str(tmp_path / "a")}), progress=False)
    with torch.no_grad():  # mark the SSA branch, as a collapsed branch would differ from a fresh one
        for p in first.model.ssa.parameters():
            p.fill_(0.25)
    first.save("last.pt")
    init = {**base, "init": str(tmp_path / "a" / "last.pt")}
    kept = Trainer(load_config(None, {**init, "out_dir": str(tmp_path / "b")}), progress=False)  # auto, same L_SSA
    fresh = Trainer(load_config(None, {**init, "out_dir": str(tmp_path / "c"), "fresh_ssa": "always"}), progress=False)
    auto = Trainer(load_config(None, {**init, "out_dir": str(tmp_path / "d"), "ssa_objective": "infonce"}),
                   progress=False)  # fmt: skip  (auto: the init was trained with the paper's L_SSA)
    saved = first.model.state_dict()
    marked = {f"ssa.{name}" for name, _ in first.model.ssa.named_parameters()}
    for key, value in fresh.model.state_dict().items():
        if key in marked:
            assert torch.equal(kept.model.state_dict()[key], saved[key]), key
            assert not torch.equal(value, saved[key]), key
            assert not torch.equal(auto.model.state_dict()[key], saved[key]), key
        elif not key.startswith("ssa."):
            assert torch.equal(value, saved[key]), key
    assert capsys.readouterr().err.count("was trained with the paper L_SSA, this run uses infonce") == 1


def test_a_signal_to_the_whole_process_group_saves_at_a_step_boundary(world, tmp_path):
    # SIGTERM to the group reaches the data workers too (Ctrl-C, `kill -- -PGID`, job schedulers);
    # the workers must survive it so the main process can finish its step and save.
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "spikevimformer", "--threads", "1", "train", "--data-root", str(world),
           "--out", str(run), "--epochs", "1000", "--no-progress",
           "--set", *(f"{k}={v}" for k, v in {**TINY, "workers": 1}.items())]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((run / "log.csv").is_file() and len(losses(run)) >= 3):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "SIGTERM: saving and stopping after this step" in err and "DataLoader worker" not in err
    step = load_checkpoint(run / "last.pt")["train_state"]["progress"]["step"]
    assert step == len(losses(run)) >= 3


def test_a_second_train_into_the_same_folder_is_refused_and_the_first_kept(world, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    argv = ["train", "--data-root", str(world), "--out", str(run), "--max-steps", "1", "--no-progress",
            "--set", *(f"{k}={v}" for k, v in TINY.items())]  # fmt: skip
    assert main(argv) == 0
    before = {name: (run / name).read_bytes() for name in ("last.pt", "log.csv", "config.yaml")}
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and f"--resume {run}" in err and "--overwrite" in err
    assert {name: (run / name).read_bytes() for name in before} == before  # untouched
    assert main([*argv, "--overwrite"]) == 0
    # without --out a run never lands on an earlier one: runs/train, then runs/train-2
    monkeypatch.chdir(tmp_path)
    bare = [a for a in argv if a not in ("--out", str(run))]
    assert main(bare) == 0 and main(bare) == 0
    assert (tmp_path / "runs/train/last.pt").is_file() and (tmp_path / "runs/train-2/last.pt").is_file()
    assert "this one goes to runs/train-2" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main([*argv[:3], "--out", str(tmp_path / "file"), *argv[5:]]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_ctrl_c_saves_and_says_how_to_continue(world, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    trainer = Trainer(load_config(None, {**TINY, "data_root": str(world), "out_dir": str(run), "max_steps": 5}),
                      progress=False, resume_hint="the same adapt command with --resume")  # fmt: skip
    real_step, calls = trainer.train_step, []

    def step_then_interrupt(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(trainer, "train_step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    err = capsys.readouterr().err
    assert f"interrupted at step 1: saved {run / 'last.pt'}; continue with the same adapt command with --resume" in err
    assert load_checkpoint(run / "last.pt")["train_state"]["progress"]["step"] == 1



class _ConstantSSA(torch.nn.Module):
    """An SSA branch forced to one output whatever the input (what L_SSA's collapse reaches)."""

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.flatten(2) * 0 + 1


def test_each_branch_spread_is_logged_and_a_collapsed_branch_is_warned_once(world, tmp_path, capsys):
    trainer = Trainer(load_config(None, {**TINY, "data_root": str(world), "out_dir": str(tmp_path / "run"),
                                         "max_steps": 5, "final_eval": False, "ssa_objective": "paper"}),
                      progress=False)  # fmt: skip  (the paper's loss: the warning names the one that cannot collapse)
    trainer.model.ssa = _ConstantSSA()
    trainer.collapse = CollapseWatch(patience=2, hints=trainer.collapse.hints)
    result = trainer.fit()
    log = list(csv.DictReader((tmp_path / "run/log.csv").open()))
    assert {"spread_descriptor", "spread_ssa"} <= set(log[0])
    assert all(float(r["spread_ssa"]) < 1e-6 < float(r["spread_descriptor"]) for r in log)
    assert result["collapsed"] == {"ssa": 2}
    err = capsys.readouterr().err
    assert err.count("warning: the ssa output has collapsed") == 1 and "--ssa-objective infonce" in err
