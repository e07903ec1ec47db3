"""Visual inspection of fitted sknets networks.

matplotlib is needed only when a display is plotted; importing this module does
not import it.
"""

from sknets.inspection._history import TrainingHistoryDisplay

__all__ = ["TrainingHistoryDisplay"]
