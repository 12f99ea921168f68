"""The development chain: anvil started as a process (anvil.py), its state file kept across crashes (state.py),
HTTPS in front of it (gateway.py), and `twinledger chain start` (cli.py).

The chain side's own: deploy/ assembles `chain start` into `twinledger` and issues the terminator's certificate
from the consortium CA (coordinator/ca.py), which this package may not import; it passes the files in.
"""
