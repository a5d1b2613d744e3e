"""The GSN dataset: find it (directory, zip or URL), validate it, decode it once and cache the result.

Sources, in the order `resolve_source` tries them: an explicit argument, the environment variable
SHAPECOUNT_DATA, the official download URL. A source is
- a directory holding `labels.csv` and the PNGs next to it (or one subfolder that does, e.g. `data/`);
- a `.zip` laid out like the official one (`data/labels.csv`, `data/img_*.png`), or with labels.csv at its
  root or in any single top folder; read in memory, never extracted;
- an http(s) URL of such a zip, downloaded once into the cache dir.

Every problem with the data is a `DataError` whose one-line message names the file (or `labels.csv row N`) and
how to fix it. The decoded images are cached as an `.npz` keyed by a hash of the source's content, so only the
first load decodes PNGs.

Modules: `validation` (labels.csv rows, PNG checks), `sources` (where the data and the cache are; directory and
zip sources), `downloader` (URL sources), `cache` (`load_gsn` and the decoded-array cache) and `dataset`
(`GSNData`, the official split, the summary of `shapecount check`). The public names are re-exported here.
"""

from shapecount.data.cache import CACHE_VERSION, load_gsn
from shapecount.data.dataset import GSNData, format_summary, official_split, split, summary
from shapecount.data.downloader import download, download_path
from shapecount.data.sources import DEFAULT_URL, ENV_CACHE, ENV_DATA, cache_dir, resolve_source
from shapecount.data.validation import (
                                        ACCEPTED_MODES,
                                        HEADER,
                                        LABELS_NAME,
                                        MAX_IMAGE_BYTES,
                                        MAX_LABELS_BYTES,
                                        MAX_SIDE,
                                        PNG_SIGNATURE,
                                        SIDE,
                                        decode_png,
                                        parse_labels,
                                        png_size,
                                        read_image,
)

__all__ = ["ACCEPTED_MODES", "CACHE_VERSION", "DEFAULT_URL", "ENV_CACHE", "ENV_DATA", "HEADER", "LABELS_NAME",
           "MAX_IMAGE_BYTES", "MAX_LABELS_BYTES", "MAX_SIDE", "PNG_SIGNATURE", "SIDE", "GSNData", "cache_dir",
           "decode_png", "download", "download_path", "format_summary", "load_gsn", "official_split",
           "parse_labels", "png_size", "read_image", "resolve_source", "split", "summary"]
