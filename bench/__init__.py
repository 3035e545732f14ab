"""gridtask's benchmark: ``python -m bench [--quick] [--json PATH]`` (see bench/README.md).

Sections: gas (the contract in-process, titanoboa), end to end (latency and throughput on
a real devnet), memory (a node with the embedding model loaded). Every target is a ratio
of two numbers measured in the same run, so a noisy machine shifts both sides alike.
"""
