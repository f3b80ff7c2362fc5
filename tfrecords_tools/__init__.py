"""TFRecord builders: one command per dataset, sharded, deterministic, atomic and verifiable.

    python -m tfrecords_tools.voc --voc-root DIR [--sbd-root DIR] --splits train_aug,val \
        --output-dir DIR
    python -m tfrecords_tools.cityscapes --cityscapes-root DIR --splits train,val --output-dir DIR
    python -m tfrecords_tools.synthetic --output-dir DIR [--num-train N --num-val N --seed S]

The builders import no TensorFlow: ``framing`` frames the records (CRC32C from
``google-crc32c``), ``example`` encodes the ``tf.train.Example`` protos, ``sources`` reads and
validates one example, ``writer`` writes the shards and manifests with worker processes,
``progress`` shows the progress line and ``cli`` holds what the builders' command lines share.
"""
