"""What starts each part of TwinLedger (chain, contracts, nodes, coordinator) and the demo built on them."""
