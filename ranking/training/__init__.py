"""Training the ranking models: data assembly, the teacher, the student.

``data.py`` turns a judged dataset into query groups (graded judgments plus
hard negatives mined from the first stage, with duplicate titles of judged
products excluded); ``losses.py`` holds the ranking losses; ``reranker.py``
trains the teacher cross-encoder; ``student.py`` distils the student.
"""
