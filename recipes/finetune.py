"""Fine-tune a causal LM to write item IDs: ``sid4llm finetune``; run it with ``accelerate launch`` for
many processes or GPUs.

The code is :mod:`sid4llm.commands.finetune`; this file exists so that ``accelerate launch recipes/finetune.py``
works. ``--help`` lists the flags; ``--config FILE`` reads them from YAML.
"""

from sid4llm.commands.finetune import run

if __name__ == "__main__":
    run()
