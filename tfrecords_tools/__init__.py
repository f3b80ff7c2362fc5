"""TFRecord builders: one command per dataset, sharded, deterministic, atomic and verifiable.

    python -m tfrecords_tools.voc --voc-root DIR [--sbd-root DIR] --splits train_aug,val \
        --output-dir DIR
    python -m tfrecords_tools.cityscapes --cityscapes-root DIR --splits train,val,train_extra \
        --output-dir DIR
    python -m tfrecords_tools.ade20k --ade-root ADEChallengeData2016 --splits train,val \
        --output-dir DIR
    python -m tfrecords_tools.coco --coco-root DIR --splits train2017,val2017 --target voc \
        --output-dir DIR
    python -m tfrecords_tools.folder --images DIR --masks DIR --spec SPEC.yaml \
        --splits train=0.9,val=0.1 --output-dir DIR
    python -m tfrecords_tools.synthetic --output-dir DIR [--num-train N --num-val N --seed S]
    python -m tfrecords_tools.inspect 'DIR/train-*.tfrecord'

Every builder reads the masks the way a dataset spec says (``deeplab_family.data.spec``: class
names, palette, ignore label, index or colour masks, label map) and writes the spec into each
split's manifest, where training, evaluation, TensorBoard, ``predict`` and the export find it.
``inspect`` reports what a set holds and the mistakes users make, with a contact sheet.

The builders import no TensorFlow: ``framing`` frames the records (CRC32C from
``google-crc32c``), ``example`` encodes the ``tf.train.Example`` protos, ``sources`` reads and
validates one example, ``writer`` writes the shards and manifests with worker processes,
``progress`` shows the progress line and ``cli`` holds what the builders' command lines share.
"""
