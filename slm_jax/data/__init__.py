"""Speech-text data, along its flow (docs/data_pipeline.md, docs/data_contract.md):

  corpus/ -> tokenize.py (text/, speech/) -> templates/ -> tasks (slm_jax.tasks) -> cache/
  -> pipeline/ -> batch.py (the train loop's interface); synthetic.py needs no corpus.
"""
