"""session_learning: retrain trading models after every session, deploy only behind gates."""
