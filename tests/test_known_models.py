"""Published totals of the shipped specs (torchvision, the papers, torchinfo's golden files)."""
import pytest

import cnncalc

KNOWN = [
    # spec, params (learnable), buffers (batchnorm running statistics), MACs, output WxHxD
    ("lenet5", 61_706, 0, 416_520, (1, 1, 10)),
    ("alexnet", 60_965_224, 0, 724_406_816, (1, 1, 1000)),
    ("alexnet_torchvision", 61_100_840, 0, 714_188_480, (1, 1, 1000)),   # torchvision 0.71 GMACs
    ("vgg16", 138_357_544, 0, 15_470_264_320, (1, 1, 1000)),             # torchvision 15.47 GMACs
    ("resnet18", 11_689_512, 9_600, 1_814_073_344, (1, 1, 1000)),        # torchvision 1.81
    ("lecture_conv_32x32x3", 760, 0, 768_000, (32, 32, 10)),
    ("lecture_7x7_stride1", 10, 0, 225, (5, 5, 1)),
    ("lecture_7x7_stride2", 10, 0, 81, (3, 3, 1)),
    ("lecture_7x7_pad1", 10, 0, 441, (7, 7, 1)),
    ("inception_block", 163_696, 0, 128_049_152, (28, 28, 256)),
    # torchvision inception_v3(aux_logits=False): 5.71 GFLOPS in torchvision's table (= GMACs)
    ("inception_v3", 23_834_568, 34_432, 5_713_216_096, (1, 1, 1000)),
    ("googlenet", 6_624_904, 14_560, 1_498_376_192, (1, 1, 1000)),
    # pretrainedmodels' inceptionv4 / timm's inception_v4 at 299x299: 42,679,816 parameters
    ("inception_v4", 42_679_816, 63_168, 12_253_974_624, (1, 1, 1000)),
    ("mobilenet_v2", 3_504_872, 34_112, 300_774_272, (1, 1, 1000)),
    ("squeezenet1_0", 1_248_424, 0, 818_924_576, (1, 1, 1000)),
    ("densenet121", 7_978_856, 83_648, 2_834_161_664, (1, 1, 1000)),
    # He et al. 2016 4.2 (0.27 M; 272,474 with 1x1 projection shortcuts, 269,722 with option A)
    ("resnet20_cifar", 272_474, 1_568, 40_813_184, (1, 1, 10)),
    # VGG-11 (config A) + batch norm, bias-free convs, one fc on 1x1x512 (CIFAR VGG: 9.23 M)
    ("vgg_cifar_bn", 9_228_362, 5_504, 152_769_536, (1, 1, 10)),
]

# torchvision's model tables: num_params and GFLOPS (which are GMACs, two decimals)
TORCHVISION = {"alexnet_torchvision": (61_100_840, 0.71), "vgg16": (138_357_544, 15.47),
               "resnet18": (11_689_512, 1.81), "googlenet": (6_624_904, 1.50),
               "mobilenet_v2": (3_504_872, 0.30), "squeezenet1_0": (1_248_424, 0.82),
               "densenet121": (7_978_856, 2.83), "inception_v3": (23_834_568, 5.71)}


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_table(specs_dir, name):
    params, gflops = TORCHVISION[name]
    t = cnncalc.load(specs_dir / f"{name}.yaml").analyze()["totals"]
    assert t["params"] == params
    assert round(t["macs"] / 1e9, 2) == gflops


@pytest.mark.parametrize("name,params,buffers,macs,out", KNOWN, ids=[k[0] for k in KNOWN])
def test_published_totals(specs_dir, name, params, buffers, macs, out):
    g = cnncalc.load(specs_dir / f"{name}.yaml")
    t = g.analyze()["totals"]
    assert t["params"] == t["trainable_params"] == params
    assert t["non_trainable_params"] == 0
    assert t["buffers"] == buffers
    assert t["macs"] == macs
    o = g.output_shape
    assert (o.w, o.h, o.c) == out


def test_every_shipped_spec_loads(specs_dir):
    for path in specs_dir.glob("*.yaml"):
        if not path.name.startswith("answers_"):  # answers files are for `cnncalc check`
            cnncalc.load(path)


def test_vgg16_pool5_receptive_field(specs_dir):
    # google-research/receptive_field's table: vgg_16 pool5 RF 212, effective stride 32
    g = cnncalc.load(specs_dir / "vgg16.yaml")
    pools = [n for n in g.nodes if n.kind == "maxpool"]
    assert pools[-1].rf.size == (212, 212)
    assert pools[-1].rf.stride == (32, 32)


def test_resnet18_state_dict_names(specs_dir):
    g = cnncalc.load(specs_dir / "resnet18.yaml")
    names = set(g.param_shapes()) | set(g.buffer_shapes())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight",
                "layer2.0.downsample.0.weight", "layer2.0.downsample.1.bias", "fc.weight"):
        assert key in names
    assert g.param_shapes()["layer4.1.conv2.weight"] == (512, 512, 3, 3)


def test_alexnet_shapes(specs_dir):
    g = cnncalc.load(specs_dir / "alexnet.yaml")
    # (227 - 11)/4 + 1 = 55; pools 3/2: 55 -> 27 -> 13 -> 6
    assert g.node("conv1").out_shape == (96, 55, 55)
    assert g.node("pool1").out_shape == (96, 27, 27)
    assert g.node("pool3").out_shape == (256, 6, 6)


def test_torchinfo_single_input_net():
    # torchinfo's SingleInputNet: conv(1->10,5) pool2 relu conv(10->20,5) pool2 relu fc 320->50->10
    g = cnncalc.load({"input": "28x28x1", "layers": [
        {"conv": {"K": 10, "F": 5}}, {"maxpool": {"F": 2}}, "relu",
        {"conv": {"K": 20, "F": 5}}, {"maxpool": {"F": 2}}, "relu", "flatten",
        {"fc": {"units": 50}}, "relu", {"fc": {"units": 10}}]})
    t = g.analyze()["totals"]
    assert t["trainable_params"] == 21_840
    assert t["macs"] == 480_500


def test_inception_v3_receptive_field_matches_the_distill_table(specs_dir):
    # Araujo, Norris & Sim (Distill, 2019), table of receptive fields: Inception v3 1311,
    # effective stride 32, at Mixed_7c (the last layer before global pooling)
    g = cnncalc.load(specs_dir / "inception_v3.yaml")
    rf = g.node("Mixed_7c.cat").rf
    assert rf.size == (1311, 1311) and rf.stride == (32, 32)


def test_inception_v3_plus_aux_logits_is_torchvision_published_count(specs_dir):
    # torchvision's Inception_V3_Weights.IMAGENET1K_V1 lists num_params 27,161,264: the model
    # with its auxiliary classifier (AuxLogits on Mixed_6e's 17x17x768 output)
    aux = cnncalc.load({"input": "17x17x768", "layers": [
        {"avgpool": {"size": 5, "stride": 3}},
        {"conv": {"filters": 128, "size": 1, "bias": False}}, {"batchnorm": None}, "relu",
        {"conv": {"filters": 768, "size": 5, "bias": False}}, {"batchnorm": None}, "relu",
        {"adaptive_avgpool": {"size": 1}}, "flatten", {"fc": {"units": 1000}}]})
    main = cnncalc.load(specs_dir / "inception_v3.yaml")
    assert aux.analyze()["totals"]["params"] == 3_326_696
    assert main.analyze()["totals"]["params"] + 3_326_696 == 27_161_264


#: Araujo, Norris & Sim (Distill, 2019) / google-research/receptive_field's table (TF-slim's
#: models, any resolution): the spec's node for each end point -> (receptive field, effective
#: stride, effective padding). The PyTorch ports name the end points differently: Inception
#: v4's features.3 ... features.21 are Mixed_3a ... Mixed_7d
DISTILL = {
    "inception_v4": {
        "features.3.cat": (15, 4, 2), "features.4.cat": (47, 4, 14),
        "features.5.cat": (55, 8, 14), "features.6.cat": (87, 8, 30),
        "features.7.cat": (119, 8, 46), "features.8.cat": (151, 8, 62),
        "features.9.cat": (183, 8, 78), "features.10.cat": (215, 16, 86),
        "features.11.cat": (407, 16, 182), "features.12.cat": (599, 16, 278),
        "features.13.cat": (791, 16, 374), "features.14.cat": (983, 16, 470),
        "features.15.cat": (1175, 16, 566), "features.16.cat": (1367, 16, 662),
        "features.17.cat": (1559, 16, 758), "features.18.cat": (1687, 32, 806),
        "features.19.cat": (1815, 32, 870), "features.20.cat": (1943, 32, 934),
        "features.21.cat": (2071, 32, 998)},
    "inception_v3": {
        "Conv2d_1a_3x3.conv": (3, 2, 0), "Conv2d_2a_3x3.conv": (7, 2, 0),
        "Conv2d_2b_3x3.conv": (11, 2, 2), "maxpool1": (15, 4, 2),
        "Conv2d_3b_1x1.conv": (15, 4, 2), "Conv2d_4a_3x3.conv": (23, 4, 2),
        "maxpool2": (31, 8, 2), "Mixed_5b.cat": (63, 8, 18), "Mixed_5c.cat": (95, 8, 34),
        "Mixed_5d.cat": (127, 8, 50), "Mixed_6a.cat": (159, 16, 58),
        "Mixed_6b.cat": (351, 16, 154), "Mixed_6c.cat": (543, 16, 250),
        "Mixed_6d.cat": (735, 16, 346), "Mixed_6e.cat": (927, 16, 442),
        "Mixed_7a.cat": (1055, 32, 490), "Mixed_7b.cat": (1183, 32, 554),
        "Mixed_7c.cat": (1311, 32, 618)},
    "vgg16": {
        "block1.0.conv1": (3, 1, 1), "pool1": (6, 2, 2), "block2.0.conv1": (10, 2, 4),
        "pool2": (16, 4, 6), "block3.0.conv1": (24, 4, 10), "block3.1.conv1": (32, 4, 14),
        "pool3": (44, 8, 18), "block4.0.conv1": (60, 8, 26), "block4.1.conv1": (76, 8, 34),
        "pool4": (100, 16, 42), "block5.0.conv1": (132, 16, 58),
        "block5.1.conv1": (164, 16, 74), "pool5": (212, 32, 90)},
}


@pytest.mark.parametrize("name", DISTILL)
def test_receptive_fields_match_the_distill_table(specs_dir, name):
    # the effective padding is how far the first unit's field reaches before the input
    g = cnncalc.load(specs_dir / f"{name}.yaml")
    for node, (size, stride, padding) in DISTILL[name].items():
        rf = g.node(node).rf
        first_pixel = [c - (n - 1) / 2 for c, n in zip(rf.start, rf.size)]
        assert (rf.size, rf.stride) == ((size, size), (stride, stride)), node
        assert first_pixel == [-padding, -padding], node


def test_inception_v4_matches_timm_model_card(specs_dir):
    # timm's inception_v4.tf_in1k card: Params (M) 42.7, GMACs 12.3, Activations (M) 15.1;
    # timm measures with fvcore (MACs plus batchnorm and pooling) and counts activations as
    # the outputs of convolutions and linear layers
    from cnncalc.counting import count_like

    report = cnncalc.load(specs_dir / "inception_v4.yaml").analyze()
    outputs = sum(r["activations"] for r in report["layers"] if r["type"] in ("conv", "fc"))
    assert round(report["totals"]["params"] / 1e6, 1) == 42.7
    assert round(report["totals"]["macs"] / 1e9, 1) == 12.3
    assert round(count_like(report, "fvcore").ops / 1e9, 2) == 12.28
    assert outputs == 15_090_184
