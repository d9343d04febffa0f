"""IDX files (the MNIST format): parsing, sha256 verification, checked download."""
import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request

import numpy as np

logger = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
MNIST_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# SHA-256 of the canonical MNIST archives (identical on every mirror).
MNIST_SHA256 = {
    TRAIN_IMAGES: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    TRAIN_LABELS: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    TEST_IMAGES: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    TEST_LABELS: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
# The mirror TensorFlow's own MNIST helpers use.
DEFAULT_SOURCE_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"

# IDX type byte -> numpy big-endian dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class ChecksumError(ValueError):
    """A file's sha256 differs from the expected one."""


class DownloadError(OSError):
    """A file could not be fetched (no network, a mirror down, a timeout)."""


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path, expected):
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError("sha256 mismatch for %s: expected %s, got %s" % (path, expected, actual))
    return actual


def read_idx(path):
    """Parse an IDX file (gzip'd if the name ends in .gz) into a numpy array."""
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError("%s is not an IDX file (bad magic %r)" % (path, raw[:4]))
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError("%s: header says %s (%d bytes of data) but has %d"
                         % (path, dims, expected, len(raw) - header))
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def download(data_dir, source_url=DEFAULT_SOURCE_URL, checksums=None, files=MNIST_FILES,
             timeout=60):
    """Fetch missing files into data_dir and verify every file's sha256.

    A download lands under a temp name and is renamed only once verified, so a
    corrupt or truncated file is never left under the real name.
    """
    checksums = MNIST_SHA256 if checksums is None else checksums
    os.makedirs(data_dir, exist_ok=True)
    for name in files:
        path = os.path.join(data_dir, name)
        if not os.path.exists(path):
            url = source_url.rstrip("/") + "/" + name
            logger.info("Downloading %s", url)
            fd, tmp = tempfile.mkstemp(prefix="." + name + ".", dir=data_dir)
            try:
                try:
                    with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                        shutil.copyfileobj(resp, out)
                except OSError as err:  # URLError, a timeout, a connection reset
                    raise DownloadError("cannot download %s: %s" % (url, getattr(err, "reason", err))) from err
                verify_sha256(tmp, checksums[name])
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        verify_sha256(path, checksums[name])
    return data_dir
