"""Stage 3, labels: labeling-function kinds, their application, task types, the label model, analysis, SME gold."""
