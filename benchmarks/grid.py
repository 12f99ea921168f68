"""The in-process Flower transport of the benchmarks and the twin federation: a `Grid` that hands each message
to the real ClientApp object in this process.

Flower's deployment engine starts a fresh process per message (about 25 s a round here), far too slow for the
~35 runs of the training benchmark; what the benchmarks measure (the model, the privacy spending) does not
depend on it. Messages still go through Flower's wire format (protobuf) both ways.
"""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

from flwr.app import Context, Message, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid

class InProcessGrid(Grid):
    """A Grid that hands each message to the real ClientApp object in this process, one node home per node.

    Messages go through Flower's wire format (protobuf) both ways, as they would between processes.
    """

    def __init__(self, node_homes: dict[int, Path]):
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.supercore.task_identity import TaskIdentity

        from node.client_app import app

        # What flwr's ServerApp runtime sets in its process before the ServerApp creates messages.
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
        self.app = app
        self.contexts = {
            node_id: Context(run_id=1, node_id=node_id, node_config={"node-home": str(home)}, state=RecordDict(),
                             run_config={})
            for node_id, home in node_homes.items()
        }
        self._replies: dict[str, Message] = {}

    def set_run(self, run) -> None:  # one implicit run
        self._run = run

    @property
    def run(self):
        return getattr(self, "_run", None)

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages) -> list[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())  # what the SuperLink does
            message.metadata.__dict__["_run_id"] = 1
            delivered = message_from_proto(message_to_proto(message))
            delivered.metadata.__dict__["_message_id"] = message.metadata.message_id
            reply = self.app(message=delivered, context=self.contexts[message.metadata.dst_node_id])
            reply.metadata.__dict__["_message_id"] = str(uuid4())
            self._replies[message.metadata.message_id] = message_from_proto(message_to_proto(reply))
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids) -> list[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))
