"""From cached template outputs to training batches (docs/data_pipeline.md).

  records.py           the slm1 byte format of one cached example
  cache.py             atomic ArrayRecord caches with vocab_spec.json and cache_info.json
  documents.py         shift by one per document; policy for documents longer than L
  grain_pipeline.py    shard by process, shuffle, mix, pack, batch; checkpointable iterator
  feature_converter.py the plain seqio / tf.data path with the same batch
  input_pipeline.py    the gin switch between the two
  cli.py               `slm-data cache` and `slm-data inspect`
  synthetic_examples.py random valid template outputs for tests and bench/data_pipeline.py

TensorFlow is imported only by feature_converter.py and cli.py's `cache` (seqio tasks).
"""
