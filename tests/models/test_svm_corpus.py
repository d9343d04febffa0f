"""models.svm.corpus: deterministic generator; the shipped sample is its output."""
import csv
from pathlib import Path

import pytest

from models.svm import corpus, data

DATA_DIR = Path(corpus.__file__).resolve().parent / "data"


def test_generator_is_deterministic_and_covers_classes():
    rows = corpus.generate(2000, 124)
    assert rows == corpus.generate(2000, 124)
    assert rows != corpus.generate(2000, 124, seed=1)
    labels = {label for _, label in rows}
    assert len(labels) == 124
    assert "MutualFund.初始规模" in labels
    assert any(text.startswith("@kg.") for text, _ in rows)


def test_class_limit():
    with pytest.raises(ValueError):
        corpus.class_names(corpus.MAX_CLASSES + 1)


def test_shipped_sample_is_reproducible(tmp_path):
    # The command recorded in corpus.py's docstring regenerates the shipped files.
    train, dev = tmp_path / "sample.csv", tmp_path / "sample_dev.csv"
    corpus.main(["--rows", "500", "--classes", "8", "--out", str(train),
                 "--dev_out", str(dev), "--dev_fraction", "0.2"])
    assert train.read_bytes() == (DATA_DIR / "sample.csv").read_bytes()
    assert dev.read_bytes() == (DATA_DIR / "sample_dev.csv").read_bytes()
    texts, labels = data.load_data_and_labels(DATA_DIR / "sample.csv")
    assert len(texts) == 400 and len(set(labels)) == 8
    with open(DATA_DIR / "sample_dev.csv", encoding="utf-8") as f:
        assert next(csv.reader(f)) == ["text", "label"]
