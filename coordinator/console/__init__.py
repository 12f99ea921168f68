"""The consortium operator console: a FastAPI app over the coordinator home, the ledger and Flower.

Operators create studies on chain, launch and stop training runs on the SuperLink, watch them live and
download their model and report; observers (e.g. hospital staff) only watch. See docs/console.md.
"""
