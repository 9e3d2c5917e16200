"""The registry network's services; ``services.common`` holds what they share."""
