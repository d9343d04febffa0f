"""models.svm.transformer: jieba + TF-IDF, and its JSON round trip."""
import json

import numpy as np
import pytest

from models.svm import corpus
from models.svm.transformer import TextTransformer, transformer_path

TEXTS = [text for text, _ in corpus.generate(300, 8, seed=3)]
CLASSES = sorted({label for _, label in corpus.generate(300, 8, seed=3)})
UNSEEN = ["@kg.MutualFund 基金@初始规模 是怎样", "完全没见过的词语 量子纠缠", "", "ABC Def"]


@pytest.fixture(scope="module")
def fitted():
    return TextTransformer(classes=CLASSES).fit(TEXTS)


def test_jieba_segments_chinese(fitted):
    tokens = fitted.tokenize("@kg.MutualFund 基金@初始规模 是怎样")
    assert "基金" in tokens and "规模" in tokens and "怎样" in tokens
    assert all(tok.strip() == tok and tok for tok in tokens)  # no whitespace tokens
    # Word bigrams over jieba tokens are features too.
    assert "初始 规模" in fitted.vocabulary
    assert "mutualfund" in fitted.vocabulary  # lowercased ASCII


def test_transform_shape_dtype_and_norm(fitted):
    x = fitted.transform(TEXTS[:10])
    assert x.shape == (10, fitted.n_features) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert not fitted.transform(["量子纠缠"]).any()  # unknown words -> all-zero row


def test_json_round_trip_gives_identical_vectors(fitted, tmp_path):
    path = fitted.save_to_version_dir(tmp_path / "7")
    assert path == transformer_path(tmp_path / "7")
    assert path.endswith("7/assets.extra/transformer.json")
    with open(path, encoding="utf-8") as f:
        raw = json.loads(f.read())  # plain JSON, readable by anyone
    assert raw["vocabulary"] == fitted.vocabulary and raw["classes"] == CLASSES
    assert len(raw["idf"]) == raw["n_features"] == fitted.n_features

    loaded = TextTransformer.load_from_version_dir(tmp_path / "7")
    assert loaded.vocabulary == fitted.vocabulary
    assert loaded.classes == CLASSES and loaded.settings == fitted.settings
    for texts in (TEXTS, UNSEEN):
        a, b = fitted.transform_sparse(texts), loaded.transform_sparse(texts)
        assert (a != b).nnz == 0  # bit-identical, not merely close
    assert loaded.class_name(1) == CLASSES[1]


def test_round_trip_without_idf(tmp_path):
    plain = TextTransformer(use_idf=False, ngram_range=[1, 1]).fit(TEXTS)
    loaded = TextTransformer.load(plain.save(tmp_path / "t.json"))
    assert np.array_equal(plain.transform(UNSEEN + TEXTS), loaded.transform(UNSEEN + TEXTS))


def test_rejects_foreign_json_and_unknown_settings(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a transformer JSON"):
        TextTransformer.load(bad)
    with pytest.raises(ValueError, match="unknown transformer settings"):
        TextTransformer(stop_words=["的"])
    with pytest.raises(RuntimeError, match="not fitted"):
        TextTransformer().transform(["基金"])
