"""Training the models: data assembly, the bi-encoder, the teacher, the student, LambdaMART data.

``data.py`` turns a judged dataset into query groups (graded judgments plus
hard negatives mined from the first stage, with duplicate titles of judged
products excluded); ``losses.py`` holds the ranking losses; ``biencoder.py``
fine-tunes the bi-encoder; ``reranker.py`` trains the teacher cross-encoder;
``student.py`` distils the student; ``ltr_data.py`` builds LambdaMART's
training lists with point-in-time store features.
"""
