"""Communication between processes: queues, shared values and shared numpy arrays.

Everything here lives in named shared memory and travels by name, so it can be handed to a
spawned process or to a pool task under every start method. numpy is imported only by the
modules that need it.
"""
