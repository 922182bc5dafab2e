"""Classification and localization metrics."""
