"""ArrayRecord caches of template outputs (docs/data_contract.md section 4).

  records.py     the slm1 byte format of one cached example
  directory.py   one cache directory, written atomically: shards, vocab_spec.json, cache_info.json
  tasks.py       a seqio Task or Mixture cached as ROOT/<task>/ + ROOT/mixture.json, and read back
  side_by_side.py  independent jobs (component caches) in this and spawned processes at once

    info = write_cache(examples, out_dir, vocab, task="t")
    info = open_cache(out_dir, vocab)            # checks completeness and the vocabulary
"""
from slm_jax.data.cache.directory import (INFO_FILENAME, CacheInfo, ExampleError,
                                          IncompleteCacheError, open_cache, validate_example,
                                          write_cache)
from slm_jax.data.cache.records import RecordFormatError

__all__ = ["INFO_FILENAME", "CacheInfo", "ExampleError", "IncompleteCacheError", "open_cache",
           "validate_example", "write_cache", "RecordFormatError"]
