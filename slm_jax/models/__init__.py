"""Model code: towers, decoder blocks, the shared-decoder speech-text LM, heads and losses."""
