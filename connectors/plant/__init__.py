"""Plant automation over OPC UA (asyncua 2): see connector.py and docs/plant.md."""

from connectors.plant.connector import (
    BatchCollection,
    PlantConnector,
    TagInfo,
    TagReading,
    TagSubscription,
)

__all__ = ["BatchCollection", "PlantConnector", "TagInfo", "TagReading", "TagSubscription"]
