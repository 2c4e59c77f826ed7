"""The claims of arXiv 2602.16375 on one dataset: ``sid4llm reproduce-paper``.

The code is :mod:`sid4llm.commands.reproduce_paper`; this file exists so that ``accelerate launch recipes/reproduce_paper.py``
works. ``--help`` lists the flags; ``--config FILE`` reads them from YAML.
"""

from sid4llm.research.reproduce_paper import run

if __name__ == "__main__":
    run()
