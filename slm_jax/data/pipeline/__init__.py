"""From caches of template outputs to training batches (docs/data_pipeline.md).

  documents.py        shift by one per document; the policy for documents longer than L
  grain_pipeline.py   caches -> shard by process, shuffle, mix, pack, batch; checkpointable
  seqio_pipeline.py   a seqio task -> the same batches through tf.data, without a cache
  factories.py        the train loop's data factories over both (`train.data_factory`)

TensorFlow and seqio are imported only by seqio_pipeline.py.
"""
