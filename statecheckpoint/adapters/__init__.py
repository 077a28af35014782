"""Adapters between framework objects and what a checkpoint stores.

Each module needs only its own extra, so import the one you use:

- :mod:`statecheckpoint.adapters.numpy`: numpy arrays to safetensors and back, and
  nested state (optimizer state) to a blob and back (extra ``numpy``).
- :mod:`statecheckpoint.adapters.torch`: the same for torch tensors and
  ``optimizer.state_dict()`` (extra ``torch``).
- :mod:`statecheckpoint.adapters.tokenizers`: ``TokenizerData`` to and from a
  ``tokenizers.Tokenizer`` (extra ``tokenizers``).
- :mod:`statecheckpoint.adapters.huggingface`: a stored checkpoint to a folder
  Hugging Face tools load.

Blobs are written in the safetensors format by this package itself, so any
safetensors reader opens them and no ``safetensors`` install is needed; loading
never unpickles.
"""
