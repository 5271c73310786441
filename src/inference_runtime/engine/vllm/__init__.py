"""``runtime: vllm``: vLLM's async engine as the model of a replica.

``core.VllmEngineActor`` is the replica (vLLM batches and keeps the KV cache itself: each request
goes to it whole and its outputs stream into the request's sink); ``runner.VllmRunner`` is the
only module that imports vLLM; ``params`` maps our sampling parameters to vLLM's. Nothing here is
imported by ``import inference_runtime``.
"""
