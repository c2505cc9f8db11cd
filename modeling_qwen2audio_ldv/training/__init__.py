"""Training the adapter.

- :mod:`.objectives`: the objective registry (``OBJECTIVES``: ``lm``, ``distill``; ``lm+distill`` combines them) and
  the loss of a batch (``objective_loss``), shared by the Trainer and the guide's loop. A new objective is a row there.
- :mod:`.trainer`: ``DomainAdapterTrainer`` (the HF ``Trainer`` with those objectives, adapter-only optimiser groups
  and a strict resume).
- :mod:`.feature_cache`: the frozen tower's outputs cached once per clip, and the collator that trains from them.
- :mod:`.guide`: the usage guide's plain PyTorch loop (``train_with_domain_adapter``).
- :mod:`.arguments`, :mod:`.data`, :mod:`.pipeline`: ``train_hf.py``'s flags and recipes, its training rows and
  eval sets, and its steps around the Trainer (model loading, collation, evaluation, result files).
"""
