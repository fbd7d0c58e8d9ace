"""Framework integrations: a callback that records a modelkit run from a framework's own loop.

* :mod:`modelkit.integrations.transformers` — ``ModelkitCallback`` for ``transformers.Trainer``
  (``pip install modelkit[transformers]``);
* :mod:`modelkit.integrations.lightning` — ``ModelkitCallback`` for ``lightning.Trainer``
  (``pip install modelkit[lightning]``).

Each is one line in ``callbacks=[...]``; see docs/integrations.md. Importing this package
imports neither framework (nor torch): each submodule imports its own framework.
"""
