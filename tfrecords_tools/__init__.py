"""TFRecord builders: one command per dataset, sharded, deterministic, atomic and verifiable.

    python -m tfrecords_tools.voc --voc-root DIR [--sbd-root DIR] --splits train_aug,val \
        --output-dir DIR
    python -m tfrecords_tools.cityscapes --cityscapes-root DIR --splits train,val --output-dir DIR
    python -m tfrecords_tools.synthetic --output-dir DIR [--num-train N --num-val N --seed S]

The builders import no TensorFlow: ``writer`` frames the records and encodes the examples itself.
"""
