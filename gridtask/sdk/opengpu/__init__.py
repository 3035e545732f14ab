"""OpenGPU's SDK on gridtask: ``import gridtask.sdk.opengpu as ogpu``, then ``ogpu.client.X``
(publish sources and tasks, follow responses, watchers) and ``ogpu.service.expose`` /
``init`` / ``start`` (a source's typed functions), with ogpu's names and behaviour.

A layer over ``gridtask.sdk.Client`` (the core never imports it): a source is registered in the
``SourceRegistry`` contract with its code as a bundle on the relay, and each task is a gridtask
task of ``TaskType.SOURCE`` that only nodes serving the source run, in their sandbox.
"""

from gridtask.sdk.opengpu import client, errors, events, manifest, registry, service
from gridtask.sdk.opengpu.client import ChainConfig, ChainId  # ogpu's top level has these too

__all__ = ["ChainConfig", "ChainId", "client", "errors", "events", "manifest", "registry", "service"]
