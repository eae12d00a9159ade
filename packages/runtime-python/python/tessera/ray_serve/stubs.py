"""Stand-ins for modules the deploy-time inspector's python lacks.

The inspector needs the options, the graph and the routes, which a module declares at import; its
heavy dependencies (torch, transformers...) come from the deployment's own environment, built
later. A missing module is replaced by a stub whose every attribute is a stub class: callable
(as a constructor, a decorator or a decorator factory), subscriptable, subclassable. What the
stubs stood in for is reported, so a wrong guess is visible.
"""

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any, Iterable, Optional, Set


_MARK = "__tessera_stub__"


class _StubMeta(type):
    """The stubs' metaclass. Classes deriving from a stub inherit it but behave as plain classes
    (only the stubs themselves carry the mark)."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__") or _MARK not in cls.__dict__:
            raise AttributeError(name)
        return stub_class("%s.%s" % (cls.__qualname__, name))

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if _MARK not in cls.__dict__:
            return super().__call__(*args, **kwargs)
        # `@stub` and `@stub(...)` must leave the decorated function usable.
        if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], _StubMeta):
            return args[0]
        return cls

    def __getitem__(cls, item: Any) -> Any:
        return cls

    def __iter__(cls) -> Any:
        # Without it iteration falls back to __getitem__(0), (1)... and never ends.
        return iter(())

    def __len__(cls) -> int:
        return 0

    def __or__(cls, other: Any) -> Any:
        return cls

    __ror__ = __or__



def is_stub(value: Any) -> bool:
    return isinstance(value, type) and _MARK in value.__dict__


def stub_class(name: str) -> Any:
    return _StubMeta(name, (), {"__module__": name.rsplit(".", 1)[0], "__qualname__": name, _MARK: True})


class StubModule(types.ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self.__path__: list = []  # a package, so `import x.y` finds stubs below it too

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = stub_class("%s.%s" % (self.__name__, name))
        setattr(self, name, value)
        return value


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return StubModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class StubFinder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.roots: Set[str] = set()

    def find_spec(self, fullname: str, path: Optional[Iterable[str]] = None, target: Any = None) -> Any:
        if fullname.split(".", 1)[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, _StubLoader(), is_package=True)
        return None

    def install(self) -> None:
        if self not in sys.meta_path:
            sys.meta_path.append(self)
