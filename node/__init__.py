"""The hospital node: patients and their encrypted records, the consent gate, private training, and the
Flower ClientApp through which the node takes part in a study's rounds."""
