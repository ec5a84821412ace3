# Image for the Ray head and the GPU workers (KubeRay, the cluster launcher, the compose stack).
# Build from the repository root:  docker build -f docker/ray.Dockerfile -t dckd-ray:0.1.0 .
#
# Base: Ray's official image for the pinned Ray (pyproject: ray==2.60.0), Python 3.11.
# The "-gpu" tag is Ray's alias for its default CUDA 12.x build (the same image as the explicit
# "2.60.0-py311-cuXXX" tag); not checked here (no network). torch==2.14.1 from PyPI brings its own
# CUDA 12 runtime libraries (nvidia-* wheels), so the nodes only need a driver recent enough for CUDA 12.
FROM rayproject/ray:2.60.0-py311-gpu

# The ray image runs as the non-root user "ray" (uid 1000, group users); keep it.
USER ray
WORKDIR /home/ray/dckd

ENV RAY_USAGE_STATS_ENABLED=0 \
    RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS=0 \
    RAY_CHDIR_TO_TRIAL_DIR=0 \
    PIP_NO_CACHE_DIR=1

# torch and torchvision are pinned together (as the Makefile does): PyPI's torchvision does not
# load beside other torch builds. Installed first so the layer is cached across code changes.
RUN pip install torch==2.14.1 torchvision==0.29.1

# The project is installed at build time; experiments/ stays in the working directory because
# `python -m trainers.reproduce TABLE` reads experiments/tables/ relative to it.
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users platform ./platform
COPY --chown=ray:users trainers ./trainers
COPY --chown=ray:users experiments ./experiments
RUN pip install . && python -c "import dckd, trainers.train, trainers.reproduce, ray; assert ray.__version__ == '2.60.0'"

# No credentials here: AWS_*, MLFLOW_TRACKING_URI and the Ray token come from the environment
# (Kubernetes Secret/ConfigMap, compose env file, instance role).
