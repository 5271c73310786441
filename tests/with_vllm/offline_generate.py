"""vLLM's own offline ``LLM.generate``, greedy, for the given token ids: the reference the tests
compare our gateway's output with. Run as a script (vLLM starts processes: the guard matters).

    python tests/with_vllm/offline_generate.py FOLDER MAX_TOKENS ENGINE_ARGS_JSON < prompts.json
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from vllm import LLM, SamplingParams

    folder, max_tokens, engine_args = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    prompts = json.load(sys.stdin)
    llm = LLM(model=folder, **engine_args)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params)
    result = [{"ids": list(o.outputs[0].token_ids), "text": o.outputs[0].text} for o in outputs]
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
