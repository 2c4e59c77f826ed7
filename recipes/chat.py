"""Talk to a trained recommender: ``sid4llm chat``.

The code is :mod:`sid4llm.commands.chat`; this file exists so that ``accelerate launch recipes/chat.py``
works. ``--help`` lists the flags; ``--config FILE`` reads them from YAML.
"""

from sid4llm.commands.chat import run

if __name__ == "__main__":
    run()
