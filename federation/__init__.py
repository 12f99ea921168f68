"""What both sides of the federation agree on: the message protocol and the federated tasks.

node/ (the hospital side) and coordinator/ (the consortium side) never import each other; they meet
through Flower messages whose shape is defined here, and through the chain (contracts/).
"""
