"""What torch.compile needs from charrnn_fast, set only when Dynamo is loaded.

Dynamo refuses every nn.RNNBase subclass unless `torch._dynamo.config.allow_rnn`
is set, because nn.LSTM's own forward calls an untraceable fused op. Our
forward is plain, traceable Python over registered custom ops, so
torch.compile(fullgraph=True) works once the flag is on. (It also lets Dynamo
try plain nn.LSTM modules, which PyTorch documents as experimental, instead of
graph-breaking on them.)

Importing torch._dynamo costs about a second, so `import charrnn_fast` must not
do it. Instead the flag is set the moment something else imports
`torch._dynamo.config` (torch.compile does, lazily): a one-shot import hook
runs the module as usual and then sets the flag. When Dynamo is already loaded
the flag is set at once.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

_CONFIG = "torch._dynamo.config"


def _configure(config: ModuleType) -> None:
    config.allow_rnn = True


class _Loader(importlib.abc.Loader):
    """Runs the real loader of torch._dynamo.config, then sets our flag."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        # The module may replace itself in sys.modules (torch's config modules do).
        _configure(sys.modules.get(module.__name__, module))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path=None, target=None):
        if name != _CONFIG:
            return None
        sys.meta_path.remove(self)  # one shot; also keeps find_spec below from recursing
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Set allow_rnn now if Dynamo is loaded, else when it is imported."""
    config = sys.modules.get(_CONFIG)
    if config is not None:
        _configure(config)
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
