"""Small helpers every stage may use and that know no stage: paths, atomic files, statistics and the one
way commands parse their flags.
"""
