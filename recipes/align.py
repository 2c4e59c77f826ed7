"""The preference stage (trl's DPO on the recommender's own ranked lists): ``sid4llm align``; run it with
``accelerate launch`` for many processes or GPUs.

The code is :mod:`sid4llm.commands.align`; this file exists so that ``accelerate launch recipes/align.py`` works.
``--help`` lists the flags; ``--config FILE`` reads them from YAML.
"""

from sid4llm.commands.align import run

if __name__ == "__main__":
    run()
