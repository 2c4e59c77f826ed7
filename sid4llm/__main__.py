"""``python -m sid4llm <command>``: the same as the ``sid4llm`` console script."""

from .commands import main

main()
