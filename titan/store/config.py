"""The `store:` section of the config file.

`StoreConfig` is written so that titan/config.py can take it as one of its sections
(`_SECTIONS["store"] = StoreConfig`): plain attrs fields of the types that loader knows.
Until it does, `load_store_config` reads just this section from the YAML itself, with the
same rules (unknown keys and wrong types are errors naming the file, the line and the key).
"""
from __future__ import annotations

import os
from typing import Any, Optional

import attrs
import yaml

DEFAULT_STORE_PORT = 6379
BACKENDS = ("titanstore", "redis")
FSYNC = ("always", "everysec", "no")


@attrs.frozen
class StoreConfig:
    # Master side: which store the master uses (titanstore: the titan-store process at
    # `url`; redis: a Redis or Valkey server at `url`).
    backend: str = "titanstore"
    # redis://[:password@]host:port[/0]; empty: derived from `listen` and `password`.
    url: Optional[str] = None
    # titan-store side.
    listen: str = f"tcp:{DEFAULT_STORE_PORT}:interface=127.0.0.1"
    data_dir: str = os.path.join("~", ".titan", "store")
    password: Optional[str] = None
    fsync: str = "everysec"
    # Compact the append-only file once it has grown by this much (and by more than the
    # last snapshot's size).
    compact_after_bytes: int = 64 * 1024 * 1024
    # Largest bulk string a request may carry (Redis: proto-max-bulk-len).
    max_bulk_bytes: int = 512 * 1024 * 1024
    max_clients: int = 10000
    # A subscriber whose unsent messages pass this is disconnected (Redis's
    # client-output-buffer-limit for pubsub clients).
    pubsub_buffer_bytes: int = 32 * 1024 * 1024
    # How often expired keys are swept out, seconds.
    sweep_interval: float = 0.1

    def client_url(self) -> str:
        """Where a client finds this store: `url`, else loopback at the `listen` port."""
        if self.url:
            return self.url
        port = DEFAULT_STORE_PORT
        for part in self.listen.split(":")[1:2]:
            if part.isdigit():
                port = int(part)
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{port}/0"


CHOICES = {"backend": BACKENDS, "fsync": FSYNC}


class StoreConfigError(ValueError):
    pass


def load_store_config(path: Optional[str]) -> StoreConfig:
    """The `store:` section of a config file (defaults for what it does not set)."""
    if path is None:
        return StoreConfig()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise StoreConfigError(f"{path}: cannot read the config file: "
                               f"{e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise StoreConfigError(f"{path}: cannot read the config file: not UTF-8 text") \
            from None
    return parse_store_config(text, path)


def parse_store_config(text: str, path: str = "<config>") -> StoreConfig:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise StoreConfigError(f"{where}: not valid YAML: "
                               f"{getattr(e, 'problem', None) or e}") from None
    if root is None:
        return StoreConfig()
    if not isinstance(root, yaml.MappingNode):
        raise StoreConfigError(f"{path}:{root.start_mark.line + 1}: the config must be a "
                               f"mapping")
    for key_node, value_node in root.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == "store":
            return _section(value_node, path)
    return StoreConfig()


def _section(node: yaml.Node, path: str) -> StoreConfig:
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return StoreConfig()
    if not isinstance(node, yaml.MappingNode):
        raise StoreConfigError(f"{path}:{node.start_mark.line + 1}: store: expected a "
                               f"mapping of keys")
    fields = attrs.fields_dict(attrs.resolve_types(StoreConfig))
    values: dict[str, Any] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        key = key_node.value
        if key not in fields:
            raise StoreConfigError(f"{path}:{line}: unknown key store.{key} (known in store: "
                                   f"{', '.join(fields)})")
        if key in values:
            raise StoreConfigError(f"{path}:{line}: store.{key} is given twice")
        values[key] = _convert(fields[key].type, value_node, path, f"store.{key}")
        choices = CHOICES.get(key)
        if choices and values[key] not in choices:
            raise StoreConfigError(f"{path}:{value_node.start_mark.line + 1}: store.{key} "
                                   f"must be one of {', '.join(choices)}, not "
                                   f"{values[key]!r}")
    return StoreConfig(**values)


def _convert(kind: Any, node: yaml.Node, path: str, key: str) -> Any:
    line = node.start_mark.line + 1
    loader = yaml.SafeLoader("")
    try:
        value = loader.construct_object(node, deep=True)
    except yaml.YAMLError as e:
        raise StoreConfigError(f"{path}:{line}: {key}: {getattr(e, 'problem', None) or e}") \
            from None
    finally:
        loader.dispose()
    if value is None:
        if kind == Optional[str]:
            return None
        raise StoreConfigError(f"{path}:{line}: {key} must not be empty")
    if kind in (str, Optional[str]):
        if isinstance(node, yaml.ScalarNode):
            return node.value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    names = {str: "a string", Optional[str]: "a string", int: "a whole number above 0",
             float: "a number above 0"}
    raise StoreConfigError(f"{path}:{line}: {key} must be {names.get(kind, kind)}, not "
                           f"{value!r}")
