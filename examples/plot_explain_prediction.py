"""
Explain a prediction
====================

Placeholder.
"""
import matplotlib.pyplot as plt
plt.plot([1, 2])
