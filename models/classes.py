"""The classes verge tells apart, defined once. Plain constants (no torch), so the store, the web
UI and the workers import them from here as the heads do."""
CLASSES = ("field", "road", "road_and_field")  # every class; what the three-class head outputs
BINARY_CLASSES = ("field", "road")             # what the seed's binary head outputs
