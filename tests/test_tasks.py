"""The task seam (issue 19): the registry, metric directions, reading model outputs, the
language-modelling metrics against a direct computation, and text data as token windows."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from modelkit.errors import DataError, UnknownName
from modelkit.runs import RunRecord
from modelkit.tasks import TASKS, get_task, list_tasks, metric_directions, model_logits, task_of


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_states_its_metrics_with_a_direction(name: str) -> None:
    task = get_task(name)
    assert task.name == name
    assert task.metrics[0] is task.primary
    assert {m.direction for m in task.metrics} <= {"higher", "lower"}
    assert task.metric("loss").higher_is_better is False  # every task reports its loss
    assert task.pipeline_tag and task.hub_task_name and task.unit and task.count_key


def test_directions_are_the_gate_table() -> None:
    table = metric_directions()
    assert table["classification"] == {"accuracy": "higher", "loss": "lower"}
    assert table["language-modeling"]["perplexity"] == "lower"
    assert table["language-modeling"]["loss"] == "lower"
    assert set(table) == set(list_tasks())


def test_unknown_task_names_the_choices() -> None:
    with pytest.raises(UnknownName) as exc:
        get_task("languge-modeling")
    assert "language-modeling" in str(exc.value.message) + str(exc.value.hint)
    assert get_task(None).name == "classification"  # nothing says otherwise
    assert task_of(RunRecord(status="complete", task="causal-lm")).name == "language-modeling"
    assert task_of(RunRecord(status="complete")).name == "classification"


def test_keep_best_metric_and_direction() -> None:
    lm = get_task("language-modeling")
    m = lm.metric("test_perplexity")
    assert m.better(3.0, 4.0) and not m.better(4.0, 3.0)
    acc = get_task("classification").metric("test_accuracy")
    assert acc.better(0.9, 0.8)
    with pytest.raises(UnknownName):
        lm.metric("test_accuracy")  # a language model has no accuracy to keep the best of


def test_model_logits_reads_tensors_tuples_and_output_objects() -> None:
    from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions

    logits = torch.randn(2, 3, 5)
    assert model_logits(logits) is logits
    assert model_logits((logits, torch.tensor(1.0))) is logits  # nanoGPT's (logits, loss)
    out = CausalLMOutputWithCrossAttentions(loss=None, logits=logits)
    assert model_logits(out) is logits
    with pytest.raises(Exception, match="not logits"):
        model_logits(object())


def test_lm_accumulator_is_token_weighted_cross_entropy_over_every_position() -> None:
    torch.manual_seed(0)
    task = get_task("language-modeling")
    data = type("D", (), {"tokenizer": "byte"})()
    acc = task.accumulator(data)
    batches = [(torch.randn(3, 7, 11), torch.randint(0, 11, (3, 7))) for _ in range(2)]
    batches.append((torch.randn(1, 7, 11), torch.randint(0, 11, (1, 7))))  # a short batch
    for logits, y in batches:
        acc.update((logits, None), y)
    every = F.cross_entropy(
        torch.cat([b[0] for b in batches]).flatten(0, 1),
        torch.cat([b[1] for b in batches]).flatten(),
    )
    result = acc.summary()
    assert result["tokens"] == 7 * 7
    assert result["loss"] == pytest.approx(float(every), rel=1e-6)
    assert result["perplexity"] == pytest.approx(math.exp(float(every)), rel=1e-6)
    assert result["bits_per_byte"] == pytest.approx(float(every) / math.log(2), rel=1e-6)
    task.check_result(result, source="test")


def test_lm_accumulator_ignores_masked_targets() -> None:
    task = get_task("language-modeling")
    acc = task.accumulator(object())  # no tokenizer known: no bits metric
    logits, y = torch.randn(2, 4, 6), torch.randint(0, 6, (2, 4))
    y[0, :2] = -100
    acc.update(logits, y)
    result = acc.summary()
    assert result["tokens"] == 6 and "bits_per_byte" not in result
    assert result["loss"] == pytest.approx(
        float(F.cross_entropy(logits.flatten(0, 1), y.flatten()))
    )


def test_lm_check_fit_names_a_last_position_only_output() -> None:
    task = get_task("language-modeling")
    y = torch.zeros(2, 8, dtype=torch.long)
    problem = task.check_fit(torch.randn(2, 1, 50), y, object())
    assert problem is not None and "every position" in problem
    assert task.check_fit(torch.randn(2, 8, 50), y, object()) is None


def test_text_windows_are_shifted_by_one_and_split_by_position(tmp_path: Path) -> None:
    from modelkit.data import load_dataset

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcdefghij" * 40)
    ds = load_dataset(f"text:{corpus}", context_length=16)
    assert ds.task == "language-modeling" and ds.vocab_size == 256 and ds.tokenizer == "byte"
    assert ds.x_train.shape[1] == 16
    assert torch.equal(ds.x_train[:, 1:], ds.y_train[:, :-1])  # targets: the next token
    assert ds.summary()["test_tokens"] == ds.y_test.numel() > 0
    again = load_dataset(f"text:{corpus}", context_length=16)
    assert again.fingerprint == ds.fingerprint
    corpus.write_text("abcdefghij" * 39 + "abcdefghik")
    assert load_dataset(f"text:{corpus}", context_length=16).fingerprint != ds.fingerprint


def test_text_char_tokenizer_and_folders(tmp_path: Path) -> None:
    from modelkit.data.text import load_text_dataset

    (tmp_path / "a.txt").write_text("hello world " * 30)
    (tmp_path / "b.txt").write_text("lorem ipsum " * 30)
    (tmp_path / ".hidden").write_text("\x00" * 1000)  # never read
    ds = load_text_dataset(str(tmp_path), tokenizer="char", context_length=8)
    assert ds.vocab_size == len(set("hello world lorem ipsum\n"))
    assert ds.info["chars"] == "".join(sorted(set("hello world lorem ipsum\n")))
    with pytest.raises(DataError, match="characters outside"):
        load_text_dataset(str(tmp_path / "a.txt"), tokenizer="char", chars="helo")
    with pytest.raises(DataError, match="unknown tokenizer"):
        load_text_dataset(str(tmp_path / "a.txt"), tokenizer="bpe")
    with pytest.raises(DataError, match="windows"):
        load_text_dataset(str(tmp_path / "a.txt"), context_length=4096)


def test_pystdlib_is_bundled_and_fingerprinted() -> None:
    from modelkit.data.text import load_pystdlib

    ds = load_pystdlib(context_length=64)
    s = ds.summary()
    assert s["train_tokens"] > 800_000 and s["test_tokens"] > 90_000
    assert s["fingerprint"].startswith("sha256:") and s["vocab_size"] == 256
    assert ds.fingerprint == load_pystdlib(context_length=64).fingerprint


def test_gpt_tiny_is_causal() -> None:
    from modelkit.models.registry import build_model

    torch.manual_seed(0)
    model, kwargs = build_model(
        "gpt-tiny", kwargs={"n_embd": 16, "n_layer": 1, "n_head": 2, "context_length": 8}
    )
    model.eval()
    x = torch.randint(0, 256, (1, 8))
    y = x.clone()
    y[0, 5] = (y[0, 5] + 1) % 256  # change position 5: earlier positions must not move
    a, b = model(x), model(y)
    assert a.shape == (1, 8, 256)
    assert torch.equal(a[0, :5], b[0, :5]) and not torch.equal(a[0, 5:], b[0, 5:])
    assert model.head.weight is model.wte.weight  # tied
    assert kwargs["vocab_size"] == 256


def test_warmup_ramps_then_the_schedule_decays() -> None:
    from modelkit.errors import ConfigError
    from modelkit.training.optim import build_scheduler, schedule_spec

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    spec = {"name": "CosineAnnealingLR", "warmup_steps": 4}
    assert schedule_spec(spec)["warmup_steps"] == 4
    sched = build_scheduler(spec, opt, steps_per_epoch=12, epochs=1)
    lrs = []
    for _ in range(12):
        lrs.append(sched.last_lr())
        opt.step()
        sched.after_step()
    assert lrs[:5] == pytest.approx([0.25, 0.4375, 0.625, 0.8125, 1.0])  # linear to the peak
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:], strict=False))  # then cosine decay
    with pytest.raises(ConfigError, match="warmup_steps"):
        schedule_spec({"name": "StepLR", "step_size": 1, "interval": "epoch", "warmup_steps": 2})


def test_eval_data_is_tokenized_as_the_run_was(tmp_path: Path) -> None:
    """A char-level run evaluated on other text keeps its vocabulary and context length
    (the ids would otherwise mean other characters)."""
    from modelkit.runs import RunRecord
    from modelkit.training.evaluate import load_eval_data

    (tmp_path / "other.txt").write_text("cab " * 100)
    data = {"tokenizer": "char", "chars": " abcd", "context_length": 8}
    record = RunRecord.from_dict({"status": "complete", "data": data}, source="run.json")
    ds = load_eval_data(
        f"text:{tmp_path / 'other.txt'}", project=None, record=record, train_cfg=None,
        skip=False, batch_size=4,
    )  # fmt: skip
    assert (ds.tokenizer, ds.vocab_size, ds.context_length) == ("char", 5, 8)
    assert int(ds.x_test.max()) <= 3  # ' ', 'a', 'b', 'c' under the run's ids


SEAM = sorted(
    [*Path(__file__).resolve().parents[1].joinpath("modelkit", "tasks").glob("*.py")]
    + [
        Path(__file__).resolve().parents[1] / "modelkit" / rel
        for rel in ("data/text.py", "data/batches.py", "models/gpt.py", "training/evaluate.py")
    ]
)


@pytest.mark.parametrize("path", SEAM, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_task_seam_modules_stay_readable(path: Path) -> None:
    """No module over 400 lines, no function over 60 (the limits of issue 24)."""
    import ast

    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 400
    long = [
        node.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []
